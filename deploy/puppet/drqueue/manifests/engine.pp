# @summary A DrQueue engine that starts at boot in its pools.
#
# Writes /etc/drqueue/engine.env for the boot wrapper, installs the wrapper
# and the drqueue-engine systemd unit, and keeps the service running.
#
# @param pools
#   The pools this engine joins at boot (DRQUEUE_POOL).
# @param slots
#   Tasks run at once.
# @param hwm
#   Most tasks held at once (running and queued); undef: slots + 1.
# @param engine_name
#   The name shown in listings; undef: the hostname.
# @param log_file
#   Log to this file, rotated by size; undef: to the journal.
# @param log_max_bytes
#   Rotate the log file at this size.
# @param log_keep
#   Old log files kept.
# @param manage_service
#   Manage the drqueue-engine service.
# @param service_ensure
#   `running` or `stopped`.
class drqueue::engine (
  Array[Pattern[/\A[A-Za-z0-9._-]+\z/], 1] $pools = ['default'],
  Integer[1] $slots = 1,
  Optional[Integer[1]] $hwm = undef,
  Optional[String[1]] $engine_name = undef,
  Optional[String[1]] $log_file = undef,
  Integer[1] $log_max_bytes = 10485760,
  Integer[0] $log_keep = 5,
  Boolean $manage_service = true,
  Enum['running', 'stopped'] $service_ensure = 'running',
) {
  include drqueue
  $root = $drqueue::root

  drqueue::install { 'drqueue-engine':
    package  => 'drqueue-engine',
    programs => ['drqueue-engine'],
  }

  $join_token_file = $drqueue::join_token ? {
    undef   => undef,
    default => "${root}${drqueue::join_token_path}",
  }
  file { "${root}/etc/drqueue/engine.env":
    ensure  => file,
    owner   => 'root',
    group   => $drqueue::config_group,
    mode    => '0640',
    content => epp('drqueue/engine.env.epp', {
      'master'          => "tcp://${drqueue::master_host}:${drqueue::engine_port}",
      'pools'           => $pools,
      'slots'           => $slots,
      'hwm'             => $hwm,
      'engine_name'     => $engine_name,
      'join_token_file' => $join_token_file,
      'log_file'        => $log_file,
      'log_max_bytes'   => $log_max_bytes,
      'log_keep'        => $log_keep,
    }),
  }

  file { "${root}/usr/bin/drqueue-engine-wrapper":
    ensure  => file,
    mode    => '0755',
    content => file('drqueue/drqueue-engine-wrapper'),
  }

  file { "${root}/etc/systemd/system/drqueue-engine.service":
    ensure  => file,
    mode    => '0644',
    content => file('drqueue/drqueue-engine.service'),
  }

  if $manage_service {
    service { 'drqueue-engine':
      ensure    => $service_ensure,
      enable    => $drqueue::service_enable,
      provider  => $drqueue::service_provider,
      subscribe => [
        File["${root}/etc/drqueue/engine.env"],
        File["${root}/usr/bin/drqueue-engine-wrapper"],
        File["${root}/etc/systemd/system/drqueue-engine.service"],
        Drqueue::Install['drqueue-engine'],
      ],
      *         => $drqueue::service_options,
    }
  }
}
