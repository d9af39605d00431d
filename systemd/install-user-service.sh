#!/usr/bin/env bash
# Installs (or removes) tgsecretd's systemd user unit and D-Bus activation file for the
# current user, with @BINDIR@ replaced by the directory holding the tgsecretd binary:
#
#   ${XDG_DATA_HOME:-~/.local/share}/systemd/user/tgsecretd.service
#   ${XDG_DATA_HOME:-~/.local/share}/dbus-1/services/io.github.tgsecretd.service
#
# Run with --help for the options; systemd/README.md explains the files.
set -euo pipefail

prog=${0##*/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
unit_name=tgsecretd.service
dbus_name=io.github.tgsecretd.service

usage() {
  cat <<EOF
Usage: $prog [--bindir DIR] [--dest-root DIR] [--no-reload] [--uninstall]

Installs tgsecretd's systemd user unit and D-Bus activation file for the current user:
  \${XDG_DATA_HOME:-~/.local/share}/systemd/user/$unit_name
  \${XDG_DATA_HOME:-~/.local/share}/dbus-1/services/$dbus_name

  --bindir DIR     the directory holding the tgsecretd binary, written into both files
                   (default: the directory of \`command -v tgsecretd\`)
  --dest-root DIR  write DIR/systemd/user/$unit_name and DIR/dbus-1/services/$dbus_name
                   instead (for packagers, e.g. --dest-root "\$pkgdir/usr/share", and
                   tests); the user manager is not touched
  --no-reload      do not run \`systemctl --user daemon-reload\` (nor, with --uninstall,
                   \`systemctl --user disable --now tgsecretd\`)
  --uninstall      remove the two files (after disabling and stopping the unit)
  -h, --help       this text
EOF
}

die() {
  echo "$prog: $*" >&2
  exit 1
}

bindir=
dest_root=
dest_root_set=0
reload=1
uninstall=0
while [ $# -gt 0 ]; do
  case $1 in
    --bindir)
      [ $# -ge 2 ] || die "--bindir needs a directory"
      bindir=$2
      shift 2
      ;;
    --bindir=*)
      bindir=${1#*=}
      shift
      ;;
    --dest-root)
      [ $# -ge 2 ] || die "--dest-root needs a directory"
      dest_root=$2
      dest_root_set=1
      shift 2
      ;;
    --dest-root=*)
      dest_root=${1#*=}
      dest_root_set=1
      shift
      ;;
    --no-reload)
      reload=0
      shift
      ;;
    --uninstall)
      uninstall=1
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      usage >&2
      die "unknown argument: $1"
      ;;
  esac
done

if [ "$dest_root_set" -eq 1 ]; then
  [ -n "$dest_root" ] || die "--dest-root needs a directory"
  data_home=$dest_root
  reload=0 # the files are not where this user's manager looks
else
  [ -n "${HOME:-}" ] || die "HOME is not set"
  data_home=${XDG_DATA_HOME:-$HOME/.local/share}
fi
unit_dir=$data_home/systemd/user
dbus_dir=$data_home/dbus-1/services
unit_path=$unit_dir/$unit_name
dbus_path=$dbus_dir/$dbus_name

# Whether `systemctl --user` reaches a running user manager.
have_user_manager() {
  command -v systemctl >/dev/null 2>&1 && systemctl --user show-environment >/dev/null 2>&1
}

if [ "$uninstall" -eq 1 ]; then
  if [ "$reload" -eq 1 ] && have_user_manager; then
    if systemctl --user disable --now "$unit_name" 2>/dev/null; then
      echo "disabled and stopped $unit_name"
    fi
  fi
  for f in "$unit_path" "$dbus_path"; do
    if [ -e "$f" ] || [ -L "$f" ]; then
      rm -f -- "$f"
      echo "removed $f"
    else
      echo "not installed: $f"
    fi
  done
  if [ "$reload" -eq 1 ] && have_user_manager; then
    systemctl --user daemon-reload
    echo "ran: systemctl --user daemon-reload"
  fi
  exit 0
fi

# The binary's directory: absolute, and free of characters that systemd (specifiers, quoting)
# or D-Bus would read specially in ExecStart=/Exec=.
if [ -z "$bindir" ]; then
  bin=$(command -v tgsecretd 2>/dev/null) || die "tgsecretd is not on PATH; pass --bindir DIR"
  case $bin in
    /*) ;;
    *) die "tgsecretd on PATH is not a file ($bin); pass --bindir DIR" ;;
  esac
  bindir=$(dirname -- "$bin")
fi
if [ "$dest_root_set" -eq 0 ]; then
  [ -d "$bindir" ] || die "--bindir $bindir: no such directory"
  bindir=$(cd -- "$bindir" && pwd)
  [ -x "$bindir/tgsecretd" ] || die "$bindir/tgsecretd is missing or not executable"
else
  # Packaging: DIR is where the binary will be installed; it need not exist here yet.
  case $bindir in
    /*) ;;
    *) die "--bindir must be absolute with --dest-root (it names the installed location)" ;;
  esac
  [ -x "$bindir/tgsecretd" ] || echo "note: $bindir/tgsecretd does not exist (yet)"
fi
case $bindir in
  *[[:space:]%\\\"\'\$\;]*)
    die "--bindir $bindir: whitespace, %, \\, quotes, \$ and ; are not supported in the path"
    ;;
esac
bindir=${bindir%/} # "/" becomes "", so "$bindir/tgsecretd" is /tgsecretd

for f in "$here/$unit_name" "$here/$dbus_name"; do
  [ -f "$f" ] || die "missing template $f (run this script from the source tree's systemd/)"
done

# Writes template $1 to $2 with @BINDIR@ replaced, atomically (a temporary file, then mv).
install_file() {
  local template=$1 dest=$2 text tmp
  text=$(<"$template")
  text=${text//@BINDIR@/"$bindir"}
  mkdir -p -- "$(dirname -- "$dest")"
  tmp=$(mktemp "$dest.XXXXXX")
  printf '%s\n' "$text" >"$tmp"
  chmod 0644 -- "$tmp"
  mv -f -- "$tmp" "$dest"
  echo "installed $dest"
}

install_file "$here/$unit_name" "$unit_path"
install_file "$here/$dbus_name" "$dbus_path"
echo "  ExecStart=$bindir/tgsecretd"

# A unit of the same name in ~/.config/systemd/user (or /etc/systemd/user) takes precedence.
if [ "$dest_root_set" -eq 0 ]; then
  for shadow in "${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user/$unit_name" "/etc/systemd/user/$unit_name"; do
    if [ -e "$shadow" ]; then
      echo "warning: $shadow exists and overrides the installed unit" >&2
    fi
  done
fi

if [ "$reload" -eq 1 ]; then
  if have_user_manager; then
    systemctl --user daemon-reload
    echo "ran: systemctl --user daemon-reload"
    # dbus-daemon finds the new activation file by itself; dbus-broker on a reload.
    if command -v busctl >/dev/null 2>&1 &&
      busctl --user call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
        ReloadConfig >/dev/null 2>&1; then
      echo "ran: busctl --user call org.freedesktop.DBus ... ReloadConfig"
    fi
  else
    echo "no systemd user manager reachable: skipped systemctl --user daemon-reload"
  fi
fi

if [ "$dest_root_set" -eq 1 ]; then
  exit 0
fi
config_dir=${XDG_CONFIG_HOME:-$HOME/.config}/tgsecretd
cat <<EOF

Next:
  put the settings in $config_dir/config.toml (see systemd/README.md)
  systemctl --user enable --now tgsecretd
  systemctl --user status tgsecretd
  journalctl --user -u tgsecretd
EOF
