#!/usr/bin/env bash
# Runs the ARM binary under qemu-user on the committed fixtures and checks that every
# probability equals the x86 build's within 1e-4 (and every verdict is the same).
#   scripts/arm-parity.sh aarch64|armv7 [X86_BINARY]
# Also runs `eval` on 24 fresh simulated phantoms with both and compares the reports' numbers.
set -euo pipefail
arch=${1:-aarch64}
cd "$(dirname "$0")/.."
case "$arch" in
  aarch64) target=aarch64-unknown-linux-gnu; qemu="qemu-aarch64-static -L /usr/aarch64-linux-gnu" ;;
  armv7) target=armv7-unknown-linux-gnueabihf; qemu="qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
  *) echo "usage: $0 aarch64|armv7 [X86_BINARY]" >&2; exit 2 ;;
esac
arm="${CARGO_TARGET_DIR:-target/cross}/$target/release/kidney-screen"
x86=${2:-target/debug/kidney-screen}
[ -x "$arm" ] || { echo "missing $arm: run scripts/cross-build.sh $arch first" >&2; exit 1; }
[ -x "$x86" ] || { echo "missing $x86: run cargo build first" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export RUST_LOG=error
inputs=(tests/fixtures/screens/*.png)
rois=(models/densenet121-kidney-sim/golden/*.roi.png)
for bin in x86 arm; do
  if [ $bin = x86 ]; then run="$x86"; else run="$qemu $arm"; fi
  $run classify --json "${inputs[@]}" > "$tmp/$bin.screens.jsonl"
  $run classify --json --roi-input "${rois[@]}" > "$tmp/$bin.rois.jsonl"
  $run classify --json --roi-input --model models/densenet121-kidney-sim-fp32 "${rois[@]}" > "$tmp/$bin.fp32.jsonl"
done
"$x86" simulate --out "$tmp/data" --count 24 --seed 7000000 >/dev/null 2>&1
"$x86" eval --quiet --roi-input --labels "$tmp/data/labels.csv" --out "$tmp/eval-x86" >/dev/null
$qemu "$arm" eval --quiet --roi-input --labels "$tmp/data/labels.csv" --out "$tmp/eval-arm" >/dev/null
python3 - "$tmp" "$arch" <<'PY'
import json, sys
tmp, arch = sys.argv[1], sys.argv[2]
worst = 0.0
n = 0
for kind in ("screens", "rois", "fp32"):
    x = [json.loads(l) for l in open(f"{tmp}/x86.{kind}.jsonl")]
    a = [json.loads(l) for l in open(f"{tmp}/arm.{kind}.jsonl")]
    assert len(x) == len(a) and x, kind
    for p, q in zip(x, a):
        assert p["verdict"] == q["verdict"], (kind, p, q)
        d = abs(p["probability"] - q["probability"])
        worst = max(worst, d)
        n += 1
        assert d <= 1e-4, f"{kind} {p['file']}: x86 {p['probability']} {arch} {q['probability']}"
rx = json.load(open(f"{tmp}/eval-x86/report.json"))
ra = json.load(open(f"{tmp}/eval-arm/report.json"))
for key in ("auc", "ci_low", "ci_high"):
    assert abs(rx["model"]["auc"][key] - ra["model"]["auc"][key]) <= 1e-6, key
for key in ("tp", "fp", "tn", "fn"):
    assert rx["model"]["at_threshold"][key] == ra["model"]["at_threshold"][key], key
print(f"{arch} under qemu agrees with x86: {n} classifications, max |dp| {worst:.2e}; eval AUC {ra['model']['auc']['auc']:.6f} on both")
PY
