# @summary The DrQueue master, with its store, API and notifications.
#
# Writes /etc/drqueue/master.env, installs the drqueue-master systemd unit and
# the `drqueue` CLI, and keeps the service running.
#
# @param db
#   The store: a directory for the embedded store, or a mongodb:// URI.
# @param bind_address
#   The address the master listens on for engines and HTTP.
# @param smtp
#   The SMTP server for notifications (smtp://HOST:PORT, smtps://…), or undef.
# @param mail_from
#   The notifications' sender.
# @param smtp_user
#   SMTP login name, if the server wants one.
# @param smtp_password
#   SMTP password.
# @param public_url
#   The HTTP API's address as users reach it (links in mails).
# @param tokens
#   API tokens for HTTP writes; empty: none needed.
# @param manage_service
#   Manage the drqueue-master service.
# @param service_ensure
#   `running` or `stopped`.
class drqueue::master (
  String[1] $db = '/var/lib/drqueue/master',
  String[1] $bind_address = '0.0.0.0',
  Optional[String[1]] $smtp = undef,
  Optional[String[1]] $mail_from = undef,
  Optional[String[1]] $smtp_user = undef,
  Optional[String[1]] $smtp_password = undef,
  Optional[String[1]] $public_url = undef,
  Array[String[1]] $tokens = [],
  Boolean $manage_service = true,
  Enum['running', 'stopped'] $service_ensure = 'running',
) {
  include drqueue
  $root = $drqueue::root

  drqueue::install { 'drqueue-master':
    package  => 'drqueue-master',
    programs => ['drqueue-master'],
  }
  drqueue::install { 'drqueue-cli':
    package  => 'drqueue-cli',
    programs => ['drqueue'],
  }

  $token_file = '/etc/drqueue/tokens'
  if !empty($tokens) {
    file { "${root}${token_file}":
      ensure  => file,
      owner   => 'root',
      group   => $drqueue::config_group,
      mode    => '0640',
      content => Sensitive(join($tokens, "\n")),
    }
  }

  $tokens_in_use = empty($tokens) ? {
    true    => undef,
    default => $token_file,
  }
  file { "${root}/etc/drqueue/master.env":
    ensure  => file,
    owner   => 'root',
    group   => $drqueue::config_group,
    mode    => '0640',
    content => epp('drqueue/master.env.epp', {
      'db'            => $db,
      'http'          => "${bind_address}:${drqueue::http_port}",
      'engines'       => "tcp://${bind_address}:${drqueue::engine_port}",
      'token_file'    => $tokens_in_use,
      'smtp'          => $smtp,
      'mail_from'     => $mail_from,
      'smtp_user'     => $smtp_user,
      'smtp_password' => $smtp_password,
      'public_url'    => $public_url,
    }),
  }

  file { "${root}/etc/systemd/system/drqueue-master.service":
    ensure  => file,
    mode    => '0644',
    content => file('drqueue/drqueue-master.service'),
  }

  if $manage_service {
    service { 'drqueue-master':
      ensure    => $service_ensure,
      enable    => $drqueue::service_enable,
      provider  => $drqueue::service_provider,
      subscribe => [
        File["${root}/etc/drqueue/master.env"],
        File["${root}/etc/systemd/system/drqueue-master.service"],
        Drqueue::Install['drqueue-master'],
      ],
      *         => $drqueue::service_options,
    }
  }
}
