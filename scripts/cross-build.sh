#!/usr/bin/env bash
# Cross-compile kidney-screen for ARM boards and package a tarball:
#   scripts/cross-build.sh aarch64|armv7 [--no-package]
# dist/kidney-screen-ARCH.tar.gz holds bin/kidney-screen, models/, boards/, deploy/ (systemd
# unit, udev rule, install.sh) and docs/install.md; scripts/deploy.sh copies it to a board.
# aarch64: Pi 3/4/5, Zero 2 W on 64-bit OS, RK3588. armv7: Pi 3 / Zero 2 W on 32-bit OS.
# Uses the host's rustc. Where rustup has no std for the target (no download server here),
# std is built from source with -Zbuild-std, the source being Debian's rust-src of the same
# rustc version (scripts/arm-toolchain.sh); host and board then run one compiler.
# Its own target dir keeps it from evicting the host build.
set -euo pipefail
arch=${1:-aarch64}
case "$arch" in
  aarch64) target=aarch64-unknown-linux-gnu; sysroot=/usr/aarch64-linux-gnu ;;
  armv7) target=armv7-unknown-linux-gnueabihf; sysroot=/usr/arm-linux-gnueabihf ;;
  *) echo "usage: $0 aarch64|armv7 [--no-package]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
# bindgen (v4l2-sys) must parse the target's kernel headers, not the host's.
export BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$sysroot --target=$target"
build_std=()
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  library=$(scripts/arm-toolchain.sh)
  case "$library" in /*) ;; *) library="$PWD/$library" ;; esac
  # -Zbuild-std on the stable compiler: RUSTC_BOOTSTRAP lets cargo use it, and cargo takes the
  # std source from this path (its override of the sysroot's rust-src location).
  export RUSTC_BOOTSTRAP=1 __CARGO_TESTS_ONLY_SRC_ROOT="$library"
  build_std=(-Zbuild-std=std,panic_unwind)
fi
cargo build --release --locked --target "$target" "${build_std[@]}" --bin kidney-screen
bin="$CARGO_TARGET_DIR/$target/release/kidney-screen"
echo "built $bin ($(du -h "$bin" | cut -f1))"
[ "${2:-}" = "--no-package" ] && exit 0
stage=$(mktemp -d)/kidney-screen-$arch
mkdir -p "$stage/bin" "$stage/models"
cp "$bin" "$stage/bin/"
cp -r models/densenet121-kidney-sim "$stage/models/"
cp -r boards "$stage/"
# The systemd unit, udev rule and install.sh (run on the board), and the install guide.
[ -d deploy ] && cp -r deploy "$stage/"
if [ -f docs/install.md ]; then mkdir -p "$stage/docs" && cp docs/install.md "$stage/docs/"; fi
[ -f README.md ] && cp README.md "$stage/"
mkdir -p dist
tarball=dist/kidney-screen-$arch.tar.gz
tar -C "$(dirname "$stage")" -czf "$tarball" "kidney-screen-$arch"
rm -rf "$(dirname "$stage")"
echo "packaged $tarball ($(du -h "$tarball" | cut -f1); $(stat -c %s "$tarball") bytes)"
