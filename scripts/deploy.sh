#!/usr/bin/env bash
# From the development machine: copy a cross-built tarball to a board over ssh and install it
# there with its deploy/install.sh (which needs sudo on the board).
#   scripts/deploy.sh [USER@]HOST --board rpi4 [--arch aarch64|armv7] [--build]
#                     [--keep-config] [--no-start] [--dry-run]
# USER defaults to pi. The tarball is dist/kidney-screen-ARCH.tar.gz (scripts/cross-build.sh
# ARCH; --build runs it first). ARCH defaults to what the board reports (uname -m). One ssh
# connection is shared by all steps, so a password is asked once.
set -euo pipefail
cd "$(dirname "$0")/.."

host="" board="" arch="" build=0 dry=0 pass=()
die() { echo "deploy.sh: $*" >&2; exit 1; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --board) [ $# -ge 2 ] || die "--board needs a name"; board=$2; shift 2 ;;
    --arch) [ $# -ge 2 ] || die "--arch needs aarch64 or armv7"; arch=$2; shift 2 ;;
    --build) build=1; shift ;;
    --keep-config|--no-start) pass+=("$1"); shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) [ -z "$host" ] || die "one host at a time"; host=$1; shift ;;
  esac
done
if [ -z "$host" ] || [ -z "$board" ]; then usage >&2; exit 2; fi
case "$board" in *[!A-Za-z0-9._-]*) die "bad board name $board" ;; esac
[ -f "boards/$board.toml" ] || die "no profile boards/$board.toml"
case "$host" in *@*) ;; *) host="pi@$host" ;; esac

ctl=$(mktemp -d)
trap '[ -S "$ctl/cm" ] && ssh -o ControlPath="$ctl/cm" -O exit "$host" >/dev/null 2>&1; rm -rf "$ctl"' EXIT
ssh_opts=(-o ControlMaster=auto -o "ControlPath=$ctl/cm" -o ControlPersist=120 -o ConnectTimeout=15)
run() {
  if [ "$dry" = 1 ]; then printf '+'; printf ' %q' "$@"; echo; else "$@"; fi
}

if [ -z "$arch" ]; then
  if [ "$dry" = 1 ]; then
    arch=aarch64
    echo "+ ssh $host uname -m   (dry run: assuming aarch64)"
  else
    machine=$(ssh "${ssh_opts[@]}" "$host" uname -m)
    case "$machine" in
      aarch64|arm64) arch=aarch64 ;;
      armv7l|armv8l) arch=armv7 ;;
      *) die "$host is $machine: tarballs are built for aarch64 and armv7 (an x86 box builds natively)" ;;
    esac
  fi
fi
case "$arch" in aarch64|armv7) ;; *) die "--arch must be aarch64 or armv7" ;; esac

tarball=dist/kidney-screen-$arch.tar.gz
[ "$build" = 1 ] && run scripts/cross-build.sh "$arch"
[ "$dry" = 1 ] || [ -f "$tarball" ] || die "no $tarball: run scripts/cross-build.sh $arch (or pass --build)"

flags=""
for f in "${pass[@]+"${pass[@]}"}"; do flags+=" $f"; done
echo "deploy.sh: $tarball -> $host ($board)"
if [ "$dry" = 1 ]; then
  remote=/tmp/kidney-screen-deploy.XXXXXX
  echo "+ ssh $host mktemp -d $remote"
else
  remote=$(ssh "${ssh_opts[@]}" "$host" mktemp -d /tmp/kidney-screen-deploy.XXXXXX)
fi
run scp "${ssh_opts[@]}" "$tarball" "$host:$remote/"
# -t: sudo may ask for a password. The unpacked copy is removed whatever install.sh says.
run ssh -t "${ssh_opts[@]}" "$host" \
  "cd $remote && tar xzf kidney-screen-$arch.tar.gz && sudo ./kidney-screen-$arch/deploy/install.sh --board $board$flags; rc=\$?; rm -rf $remote; exit \$rc"
