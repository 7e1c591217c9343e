# @summary Puts one DrQueue program in place: its package, or a link to it.
#
# @api private
#
# @param package
#   The package that holds it.
# @param programs
#   The binaries it provides (linked from `drqueue::bin_path`).
define drqueue::install (
  String[1] $package,
  Array[String[1]] $programs,
) {
  if $drqueue::install_from == 'package' {
    package { $package:
      ensure => $drqueue::package_ensure,
    }
  } else {
    $programs.each |$program| {
      file { "${drqueue::root}/usr/bin/${program}":
        ensure => link,
        target => "${drqueue::bin_path}/${program}",
      }
    }
  }
}
