#!/usr/bin/env bash
# Checks deploy/kidney-screen.service with systemd's own tools (apt-get install systemd):
#   deploy/check-unit.sh [--threshold N]
# N is in tenths of the exposure level (systemd's scale 0..100): the default 10 fails above
# exposure 1.0 (systemd calls up to 2.0 "SAFE"; this unit scores 0.6).
# 1. systemd-analyze verify, in a root laid out by `DESTDIR=... deploy/install.sh --board rpi4`
#    (verify wants ExecStart's binary to exist; any executable stands in for the ARM one) with
#    this machine's own system units copied in (sysinit.target, ...).
# 2. systemd-analyze security --offline=true: the hardening table, failing above the threshold.
set -euo pipefail
cd "$(dirname "$0")/.."
threshold=10
[ "${1:-}" = --threshold ] && threshold=$2
command -v systemd-analyze >/dev/null || { echo "check-unit.sh: no systemd-analyze (apt-get install systemd)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkg=$tmp/pkg
mkdir -p "$pkg/bin" "$pkg/models"
cp -r boards deploy "$pkg/"
cp /bin/true "$pkg/bin/kidney-screen"
units=/usr/lib/systemd/system
[ -d "$units" ] || units=/lib/systemd/system
mkdir -p "$tmp/root/usr/lib/systemd"
cp -a "$units" "$tmp/root/usr/lib/systemd/"
DESTDIR=$tmp/root "$pkg/deploy/install.sh" --board rpi4 >/dev/null
echo "== systemd-analyze verify kidney-screen.service (root: install.sh --board rpi4 into a staging dir)"
out=$(systemd-analyze verify --root="$tmp/root" kidney-screen.service 2>&1) || { echo "$out"; exit 1; }
# Unknown or unparsable keys are warnings only (exit 0): fail on any output.
[ -z "$out" ] || { echo "$out"; exit 1; }
echo "ok: no warnings"
echo "== systemd-analyze security --offline=true --threshold=$threshold deploy/kidney-screen.service"
SYSTEMD_COLORS=0 systemd-analyze security --no-pager --offline=true --threshold="$threshold" deploy/kidney-screen.service
