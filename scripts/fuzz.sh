#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and prints how many inputs each tried.
#   scripts/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
# Targets: frame_decoders, replay_streams, config_parser, manifest_parser (fuzz/fuzz_targets).
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler. Uses the nightly toolchain
# when rustup has one, else the installed stable one with RUSTC_BOOTSTRAP=1 (cargo fuzz passes
# nightly-only -Z flags). Seeds come from the repository's own fixtures, boards and manifests;
# corpora grow in fuzz/corpus/<target>, crashes land in fuzz/artifacts/<target>, logs in
# fuzz/logs. Exit status 1 if any target found a crash.
set -euo pipefail
secs=${1:-60}
shift || true
cd "$(dirname "$0")/.."
root=$PWD
if cargo +nightly --version >/dev/null 2>&1; then
  cargo=(cargo +nightly)
else
  cargo=(cargo)
  export RUSTC_BOOTSTRAP=1
fi
cd fuzz
if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <("${cargo[@]}" fuzz list); fi
mkdir -p logs

# Seeds: header bytes the targets read (format, range, width LE, height LE / format, width LE,
# height), then real data.
seed() { # target name header-hex file [bytes]
  local dir=corpus/$1
  mkdir -p "$dir"
  { printf "$(echo "$3" | sed 's/../\\x&/g')"; if [ -n "${5:-}" ]; then head -c "$5" "$4"; else cat "$4"; fi; } >"$dir/seed-$2"
}
f=$root/tests/fixtures/frames
seed frame_decoders mjpeg 02014001b400 "$f/frame_320x180.mjpg"
seed frame_decoders mjpeg-limited 02004001b400 "$f/frame_320x180.mjpg"
seed frame_decoders yuyv 000010000800 "$f/yuyv_320x180.yuv" 256
seed frame_decoders nv12 010010000800 "$f/nv12_320x180.yuv" 192
seed frame_decoders grey 030108000800 "$f/y_yuyv_320x180.gray" 64
seed frame_decoders rgb 040108000800 "$f/yuyv_320x180.yuv" 192
seed replay_streams mjpeg-frame 00100008 "$f/frame_320x180.mjpg"
seed replay_streams mjpeg-two 02200010 "$f/frame_320x180.mjpg"
cat "$f/frame_320x180.mjpg" >>corpus/replay_streams/seed-mjpeg-two
seed replay_streams yuyv 00100008 "$f/yuyv_320x180.yuv" 1024
mkdir -p corpus/config_parser corpus/manifest_parser
for b in "$root"/boards/*.toml "$root"/tests/vivid/board.toml; do
  [ -f "$b" ] && cp "$b" "corpus/config_parser/seed-$(basename "$(dirname "$b")")-$(basename "$b")"
done
for m in "$root"/models/*/manifest.toml "$root"/tests/fixtures/models/*/manifest.toml; do
  [ -f "$m" ] && cp "$m" "corpus/manifest_parser/seed-$(basename "$(dirname "$m")").toml"
done

"${cargo[@]}" fuzz build >/dev/null 2>logs/build.log || { tail -30 logs/build.log; exit 1; }
crashed=0
for t in "${targets[@]}"; do
  dict=()
  [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  echo "== $t: ${secs}s"
  set +e
  "${cargo[@]}" fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 \
    -print_final_stats=1 "${dict[@]}" >"logs/$t.log" 2>&1
  rc=$?
  set -e
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "logs/$t.log" | grep -oE '[0-9]+$' || echo "?")
  rate=$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "logs/$t.log" | grep -oE '[0-9]+$' || echo "?")
  cov=$(grep -oE '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "logs/$t.log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || true)
  if [ $rc -eq 0 ]; then
    echo "$t: $execs inputs in ${secs}s ($rate/s), $cov, no crash"
  else
    crashed=1
    echo "$t: CRASH after $execs inputs (exit $rc); see fuzz/logs/$t.log and fuzz/artifacts/$t/"
    grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|artifact_prefix|Test unit written)' "logs/$t.log" | head -8
  fi
done
exit $crashed
