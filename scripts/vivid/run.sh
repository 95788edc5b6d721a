#!/usr/bin/env bash
# Runs our V4L2 capture against the kernel's `vivid` driver in a throw-away VM and checks that
# every fault it injects shows the right state (docs/vivid.md).
#
# Boots Debian's kernel in qemu-system-x86_64 (TCG, no KVM needed) with an initramfs holding
# busybox, v4l2-ctl, vivid and its dependencies, and our binary with its glibc libraries. The
# guest runs tests/vivid/<scenario>.sh, which starts `kidney-screen run` on vivid's HDMI node
# and toggles vivid's controls (no signal, no lock, out of range, resolution change, dropped
# buffers, ERROR-flagged buffers, fatal streaming errors, disconnect + reconnect), then stops it
# with SIGTERM. tests/vivid/check.sh then checks the log.
#
# Usage: scripts/vivid/run.sh [--scenario NAME] [--bin PATH] [--release] [--timeout SECONDS]
#   --scenario  tests/vivid/NAME.sh in the guest (default: scenario; `explore` lists vivid's
#               controls and formats)
#   --bin       use this kidney-screen binary (x86_64 glibc) instead of building one
#   --release   build with the release profile (default: dev profile, deps optimised)
#   --timeout   wall-clock limit for the VM (default 420)
# Needs: qemu-system-x86, busybox-static, v4l-utils, cpio, kmod (depmod), apt-get download.
# Work files go to target/vivid (VIVID_WORK overrides); the console log to target/vivid/console.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${VIVID_WORK:-$ROOT/target/vivid}
SCENARIO=scenario
BIN=
PROFILE=dev
TIMEOUT=420
while [ $# -gt 0 ]; do
    case "$1" in
        --scenario) SCENARIO=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        --release) PROFILE=release; shift ;;
        --timeout) TIMEOUT=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

start=$(date +%s)
need() { command -v "$1" >/dev/null || { echo "missing $1 (apt-get install $2)" >&2; exit 2; }; }
need qemu-system-x86_64 qemu-system-x86
need v4l2-ctl v4l-utils
need cpio cpio
need depmod kmod
[ -x /bin/busybox ] || { echo "missing /bin/busybox (apt-get install busybox-static)" >&2; exit 2; }
file -L /bin/busybox 2>/dev/null | grep -q "statically linked" ||
    ldd /bin/busybox 2>&1 | grep -q "not a dynamic" || { echo "/bin/busybox is not static" >&2; exit 2; }
mkdir -p "$WORK"

# --- Debian's kernel and modules (not the host's) -------------------------------------------
KDIR=$WORK/kernel
if ! ls "$KDIR"/boot/vmlinuz-* >/dev/null 2>&1; then
    pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
    [ -n "$pkg" ] || { echo "cannot resolve linux-image-amd64 (apt-get update?)" >&2; exit 2; }
    (cd "$WORK" && apt-get download "$pkg" 2>/dev/null) || (cd "$WORK" && apt-get download "$pkg")
    rm -rf "$KDIR" && dpkg-deb -x "$WORK/${pkg}"_*.deb "$KDIR"
fi
VMLINUZ=$(find "$KDIR/boot" -name "vmlinuz-*" | head -1)
KVER=${VMLINUZ##*/vmlinuz-}
[ -f "$KDIR/lib/modules/$KVER/modules.dep" ] || depmod -b "$KDIR" "$KVER"
# vivid's dependencies in load order (modprobe resolves them from the extracted tree's modules.dep).
mapfile -t KOS < <(modprobe -d "$KDIR" -S "$KVER" --show-depends vivid | awk '$1 == "insmod" { print $2 }')
[ "${#KOS[@]}" -gt 1 ] || { echo "cannot resolve vivid's dependencies in $KDIR" >&2; exit 2; }

# --- our binary -------------------------------------------------------------------------------
if [ -z "$BIN" ]; then
    if [ "$PROFILE" = release ]; then
        (cd "$ROOT" && nice cargo build --release --bin kidney-screen)
        BIN=$ROOT/target/release/kidney-screen
    else
        (cd "$ROOT" && nice cargo build --bin kidney-screen)
        BIN=$ROOT/target/debug/kidney-screen
    fi
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 2; }

# --- initramfs --------------------------------------------------------------------------------
RFS=$WORK/rootfs
rm -rf "$RFS"
mkdir -p "$RFS"/{bin,usr/bin,lib/modules,proc,sys,dev,tmp,opt/ks,lib64,etc}
cp /bin/busybox "$RFS/bin/busybox"
cp "$ROOT/tests/vivid/init.sh" "$RFS/init"
chmod +x "$RFS/init"
: >"$RFS/lib/modules/deps.order"
for ko in "${KOS[@]}"; do
    name=$(basename "$ko" .ko)
    case "$ko" in
        *.ko.xz) xz -dc "$ko" >"$RFS/lib/modules/${name%.ko}.ko"; name=${name%.ko} ;;
        *.ko.zst) zstd -qdc "$ko" >"$RFS/lib/modules/${name%.ko}.ko"; name=${name%.ko} ;;
        *) cp "$ko" "$RFS/lib/modules/$name.ko" ;;
    esac
    # vivid itself is loaded (and reloaded) by the scenario, with its options.
    [ "$name" = vivid ] || echo "$name" >>"$RFS/lib/modules/deps.order"
done
# The binary without its debug info (the debug build's is ~0.5 GB).
objcopy --strip-debug "$BIN" "$RFS/opt/ks/kidney-screen"
cp /usr/bin/v4l2-ctl "$RFS/usr/bin/"
copy_libs() {
    ldd "$1" | awk '/=> \// { print $3 } /^[ \t]*\/lib/ { print $1 }' | while read -r lib; do
        mkdir -p "$RFS$(dirname "$lib")"
        cp -L "$lib" "$RFS$lib"
    done
}
copy_libs "$BIN"
copy_libs /usr/bin/v4l2-ctl
mkdir -p "$RFS/opt/ks/models"
cp -r "$ROOT/models/densenet121-kidney-sim" "$RFS/opt/ks/models/"
cp "$ROOT"/tests/vivid/*.sh "$ROOT/tests/vivid/board.toml" "$RFS/opt/ks/"
echo "root:x:0:0:root:/:/bin/sh" >"$RFS/etc/passwd"
(cd "$RFS" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initramfs.gz"
prep=$(($(date +%s) - start))
echo "vivid: kernel $KVER, initramfs $(du -h "$WORK/initramfs.gz" | cut -f1), prepared in ${prep}s" >&2

# --- boot -------------------------------------------------------------------------------------
boot_start=$(date +%s)
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 \
    -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -nographic -no-reboot -nic none \
    -kernel "$VMLINUZ" -initrd "$WORK/initramfs.gz" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 ks.scenario=$SCENARIO" |
    tee "$WORK/console.log"
vm=${PIPESTATUS[0]}
set -e
boot=$(($(date +%s) - boot_start))
echo "vivid: VM ran ${boot}s (exit $vm), whole run $(($(date +%s) - start))s" >&2
[ "$vm" -eq 124 ] && { echo "vivid: VM timed out after ${TIMEOUT}s" >&2; exit 1; }
# A clean transcript (no terminal escapes or carriage returns) for docs/vivid.md.
sed -e 's/\x1b\[[0-9;?]*[a-zA-Z]//g' -e 's/\x1bc//g' -e 's/\r//g' "$WORK/console.log" >"$WORK/transcript.txt"
[ "$SCENARIO" = scenario ] || exit 0
set +e
"$ROOT/tests/vivid/check.sh" "$WORK/console.log" | tee -a "$WORK/transcript.txt"
rc=${PIPESTATUS[0]}
echo "vivid: whole run $(($(date +%s) - start))s; transcript in $WORK/transcript.txt" >&2
exit "$rc"
