#!/usr/bin/env bash
# Installs kidney-screen on the board, from an unpacked release tarball (run as root):
#   sudo ./kidney-screen-aarch64/deploy/install.sh --board rpi4
#   sudo ./kidney-screen-aarch64/deploy/install.sh --uninstall
# Options:
#   --board NAME|FILE  profile: boards/NAME.toml from the tarball, or a TOML file of your own
#   --keep-config      keep an existing /etc/kidney-screen/board.toml (default: replace it,
#                      keeping a dated copy of the old one)
#   --no-start         install and enable, but do not (re)start the service now
#   --uninstall        stop, disable and remove the service and /opt/kidney-screen; the audit
#                      log (/var/lib/kidney-screen) and /etc/kidney-screen stay
# With DESTDIR=/some/dir it only lays the files out under that root (no user, no groups, no
# udev, no systemctl): for packaging and for checking the unit with systemd-analyze --root.
#
# What it does: creates the groups video/gpio/spi when missing and the system user
# kidney-screen; copies bin/ models/ boards/ deploy/ docs/ to /opt/kidney-screen (the previous
# install is kept as /opt/kidney-screen.prev); installs the profile as
# /etc/kidney-screen/board.toml, the unit as /etc/systemd/system/kidney-screen.service and a
# udev rule giving the gpio/spi groups the GPIO chips and SPI devices; enables the service.
set -euo pipefail

prefix=/opt/kidney-screen
confdir=/etc/kidney-screen
unit=kidney-screen.service
user=kidney-screen
audit_dir=/var/lib/kidney-screen/audit
here=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}

board="" keep_config=0 start=1 uninstall=0
boards() { for f in "$here"/boards/*.toml; do f=${f##*/}; printf '%s ' "${f%.toml}"; done; }
usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "install.sh: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --board) [ $# -ge 2 ] || die "--board needs a name"; board=$2; shift 2 ;;
    --board=*) board=${1#--board=}; shift ;;
    --keep-config) keep_config=1; shift ;;
    --no-start) start=0; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done
if [ -z "$dest" ] && [ "$(id -u)" != 0 ]; then die "run as root (sudo $0 ...)"; fi
have_systemd() { [ -z "$dest" ] && [ -d /run/systemd/system ]; }

if [ "$uninstall" = 1 ]; then
  if have_systemd; then
    systemctl disable --now "$unit" 2>/dev/null || true
  fi
  rm -f "$dest/etc/systemd/system/$unit" "$dest/etc/udev/rules.d/60-kidney-screen.rules"
  rm -rf "$dest$prefix" "$dest$prefix.prev" "$dest$prefix.new"
  have_systemd && systemctl daemon-reload
  say "removed; kept $confdir and ${audit_dir%/audit} (audit records), and the user $user"
  exit 0
fi

# The profile.
[ -n "$board" ] || { usage >&2; die "--board is required; profiles: $(boards)"; }
if [ -f "$board" ]; then
  profile=$board
else
  case "$board" in *[!A-Za-z0-9._-]*) die "bad board name $board" ;; esac
  profile=$here/boards/$board.toml
  [ -f "$profile" ] || die "no profile $profile; profiles: $(boards)"
fi
grep -q "^dir = \"$audit_dir\"" "$profile" ||
  say "warning: $profile does not set [audit] dir = \"$audit_dir\", the only directory the service may write"
grep -Eq '^backend = "rppal"|^gpio = ' "$profile" && ! grep -qa "Raspberry Pi" /proc/device-tree/model 2>/dev/null && [ -z "$dest" ] &&
  say "warning: $profile drives the LEDs with rppal, which needs a Raspberry Pi: use backend = \"cdev\" on other boards"

# The binary must run here (a tarball for another architecture fails with 'Exec format error').
bin=$here/bin/kidney-screen
[ -x "$bin" ] || die "no $bin: run this from an unpacked kidney-screen tarball"
if [ -z "$dest" ]; then
  "$bin" --version >/dev/null 2>&1 || die "$bin does not run on this $(uname -m) machine: wrong tarball (aarch64 vs armv7)?"
fi

# Groups and the user.
if [ -z "$dest" ]; then
  for g in video gpio spi; do
    getent group "$g" >/dev/null || { groupadd --system "$g"; say "created group $g"; }
  done
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --comment "kidney-screen firmware" "$user"
    say "created system user $user"
  fi
fi

# Files: staged beside the install, then swapped in (the old one kept as .prev).
install -d -m 0755 "$dest$(dirname "$prefix")"
rm -rf "$dest$prefix.new"
install -d -m 0755 "$dest$prefix.new"
for d in bin models boards deploy docs; do
  [ -e "$here/$d" ] && cp -R "$here/$d" "$dest$prefix.new/"
done
[ -f "$here/README.md" ] && cp "$here/README.md" "$dest$prefix.new/"
chmod -R u=rwX,go=rX "$dest$prefix.new"
chmod 0755 "$dest$prefix.new/bin/kidney-screen"
[ -z "$dest" ] && chown -R root:root "$dest$prefix.new"
was_active=0
if have_systemd && systemctl is-active --quiet "$unit"; then
  was_active=1
  systemctl stop "$unit"
fi
if [ -e "$dest$prefix" ]; then
  rm -rf "$dest$prefix.prev"
  mv "$dest$prefix" "$dest$prefix.prev"
fi
mv "$dest$prefix.new" "$dest$prefix"
say "installed $prefix ($("$dest$prefix/bin/kidney-screen" --version 2>/dev/null || basename "$here"))"

# The profile.
install -d -m 0755 "$dest$confdir"
target=$dest$confdir/board.toml
if [ -f "$target" ] && [ "$keep_config" = 1 ]; then
  say "kept $confdir/board.toml"
else
  if [ -f "$target" ] && ! cmp -s "$profile" "$target"; then
    cp -p "$target" "$target.$(date +%Y%m%d-%H%M%S)"
    say "saved the previous board.toml beside it"
  fi
  install -m 0644 "$profile" "$target"
  say "installed $confdir/board.toml from $profile"
fi

# The unit and the udev rule.
install -D -m 0644 "$here/deploy/$unit" "$dest/etc/systemd/system/$unit"
install -D -m 0644 "$here/deploy/60-kidney-screen.rules" "$dest/etc/udev/rules.d/60-kidney-screen.rules"
if [ -n "$dest" ]; then
  say "laid out under $dest (no user, udev or systemctl changes)"
  exit 0
fi
if command -v udevadm >/dev/null; then
  udevadm control --reload || true
  udevadm trigger --subsystem-match=gpio --subsystem-match=spidev || true
fi
if have_systemd; then
  systemctl daemon-reload
  systemctl enable "$unit" >/dev/null
  if [ "$start" = 1 ] || [ "$was_active" = 1 ]; then
    systemctl restart "$unit"
    sleep 3
    systemctl --no-pager --lines=5 status "$unit" || true
  fi
  say "enabled $unit (starts on boot); logs: journalctl -u kidney-screen -f"
else
  say "no systemd running here: start it by hand with $prefix/bin/kidney-screen run --config $confdir/board.toml"
fi
if grep -q '^sink = "spi"' "$target" && ! ls /dev/spidev* >/dev/null 2>&1; then
  say "warning: the profile has an SPI display but there is no /dev/spidev*: add dtparam=spi=on to /boot/firmware/config.txt and reboot"
fi
