# @summary Settings shared by the DrQueue master and engines.
#
# Include `drqueue::master` on the master and `drqueue::engine` on render
# nodes; set these parameters (for example in Hiera) for both.
#
# @param install_from
#   `package`: install the drqueue-master, drqueue-engine and drqueue-cli
#   packages. `path`: link the binaries found in `bin_path` (for example a
#   studio software share) into /usr/bin.
# @param package_ensure
#   The packages' ensure value (`installed`, `latest` or a version).
# @param bin_path
#   With `install_from => 'path'`: the directory holding the binaries.
# @param master_host
#   The master's address as engines and clients reach it.
# @param engine_port
#   The master's ZeroMQ port for engines.
# @param http_port
#   The master's HTTP API port.
# @param join_token
#   A join token (`drqueue engine join-token --uses N`): engines enroll
#   themselves with it on first contact. undef: accept each engine with
#   `drqueue engine accept NAME`.
# @param user
#   The account the services run as.
# @param manage_user
#   Create `user` as a system account.
# @param config_group
#   The group that may read the configuration (and the join token).
# @param root
#   A prefix for every path managed, for testing against a scratch root.
# @param service_provider
#   Force a service provider; undef lets Puppet pick systemd.
# @param service_options
#   Extra attributes for the service resources (start/stop/status commands
#   when systemd is absent).
class drqueue (
  Enum['package', 'path'] $install_from = 'package',
  String[1] $package_ensure = 'installed',
  Optional[String[1]] $bin_path = undef,
  String[1] $master_host = 'localhost',
  Integer[1, 65535] $engine_port = 5555,
  Integer[1, 65535] $http_port = 5580,
  Optional[String[1]] $join_token = undef,
  String[1] $user = 'drqueue',
  Boolean $manage_user = true,
  String[1] $config_group = 'drqueue',
  String $root = '',
  Optional[String[1]] $service_provider = undef,
  Hash $service_options = {},
) {
  if $install_from == 'path' and $bin_path == undef {
    fail('drqueue: install_from => path needs bin_path (the directory holding drqueue-master, drqueue-engine and drqueue)')
  }

  if $manage_user {
    group { $config_group:
      ensure => present,
      system => true,
    }
    user { $user:
      ensure     => present,
      system     => true,
      gid        => $config_group,
      home       => '/var/lib/drqueue',
      managehome => false,
      shell      => '/usr/sbin/nologin',
    }
  }

  # Providers that cannot enable a service at boot (no systemd) are not asked to.
  $service_enable = $service_provider ? {
    'base'  => undef,
    default => true,
  }

  $config_dir = "${root}/etc/drqueue"
  file { ["${root}/etc", $config_dir, "${root}/etc/systemd", "${root}/etc/systemd/system", "${root}/usr", "${root}/usr/bin"]:
    ensure => directory,
  }
  File[$config_dir] {
    owner => 'root',
    group => $config_group,
    mode  => '0750',
  }

  $join_token_path = '/etc/drqueue/join.token'
  if $join_token {
    file { "${root}${join_token_path}":
      ensure  => file,
      owner   => 'root',
      group   => $config_group,
      mode    => '0640',
      content => Sensitive("${join_token}\n"),
    }
  }
}
