#!/usr/bin/env bash
# Makes the host's rustc able to build for ARM boards without rustup's download server:
# std is compiled from source (`-Zbuild-std`, see scripts/cross-build.sh), and the source is
# Debian's `rust-src` package of exactly the host compiler's version (trixie-backports carries
# 1.93..1.96, sid the newest). The package is fetched with a private apt configuration and
# unpacked under target/rust-src, so the machine's own apt sources are not changed.
# Prints the library path that cross-build.sh hands to cargo. Needs network to Debian's mirror
# only on first use.
#   scripts/arm-toolchain.sh            -> prints e.g. target/rust-src/rustc-1.95.0/library
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(rustc --version | awk '{print $2}')
sysroot_src="$(rustc --print sysroot)/lib/rustlib/src/rust/library"
if [ -f "$sysroot_src/Cargo.lock" ]; then
  # `rustup component add rust-src` was possible on this machine: use it.
  echo "$sysroot_src"
  exit 0
fi
dest="target/rust-src/rustc-$version"
if [ ! -f "$dest/library/Cargo.lock" ]; then
  apt_dir=$(mktemp -d)
  trap 'rm -rf "$apt_dir"' EXIT
  mkdir -p "$apt_dir"/{lists/partial,cache/archives/partial}
  cat > "$apt_dir/sources.list" <<'EOF'
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
EOF
  apt_opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=/dev/null
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Architecture=amd64 -o APT::Architectures=amd64 -o APT::Sandbox::User=root
    -o Debug::NoLocking=1)
  # A mirror mid-sync can fail one index; the version lookup below says if it mattered.
  apt-get "${apt_opts[@]}" update -qq >&2 || echo "apt-get update reported errors; continuing" >&2
  # Debian versions look like 1.95.0+dfsg1-2~bpo13+1: take the newest build of this release.
  deb_version=$(apt-cache "${apt_opts[@]}" madison rust-src | awk -F'|' '{gsub(/ /,"",$2); print $2}' \
    | grep "^$version+" | head -1 || true)
  [ -n "$deb_version" ] || { echo "Debian has no rust-src for rustc $version (see apt-cache madison rust-src)" >&2; exit 1; }
  (cd "$apt_dir" && apt-get "${apt_opts[@]}" download -qq "rust-src=$deb_version" >&2)
  unpack="$apt_dir/unpack"
  dpkg-deb -x "$apt_dir"/rust-src_*.deb "$unpack"
  mkdir -p "$dest"
  cp -a "$unpack/usr/src/rustc-$version/library" "$dest/"
  echo "rust-src $deb_version unpacked into $dest" >&2
fi
echo "$dest/library"
