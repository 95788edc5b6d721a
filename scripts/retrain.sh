#!/usr/bin/env bash
# The whole model toolchain in one command: simulate data, train, export + quantize, parity.
#   scripts/retrain.sh [WORK_DIR]        (default /tmp/kidney-retrain; ~25 min on 2 x86 cores)
# Environment: EPOCHS (12), TRAIN_COUNT (3000), HELDOUT_COUNT (600), PYTHON (python3 with
# scripts/requirements.txt installed), PRETRAINED (path to ImageNet densenet121 weights, optional).
# Writes models/densenet121-kidney-sim (int8) and models/densenet121-kidney-sim-fp32.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/kidney-retrain}
py=${PYTHON:-python3}
cargo build --release --bin kidney-screen
bin=target/release/kidney-screen
# Training seeds 1..TRAIN_COUNT; held-out seeds start at 1,000,000 so the sets never share a case.
$bin simulate --out "$work/train" --count "${TRAIN_COUNT:-3000}" --seed 1
$bin simulate --out "$work/heldout" --count "${HELDOUT_COUNT:-600}" --seed 1000000 --crops
pretrained=()
[ -n "${PRETRAINED:-}" ] && pretrained=(--pretrained "$PRETRAINED")
$py scripts/train.py --data "$work/train" --out "$work/train_out" --epochs "${EPOCHS:-12}" "${pretrained[@]}" 2>&1 | tee "$work/train.log"
$py scripts/export.py --checkpoint "$work/train_out/model.pt" --train-report "$work/train_out/train_report.json" \
  --calibration "$work/train" --heldout "$work/heldout" --binary "$bin"
$bin check-model models/densenet121-kidney-sim
echo "retrained; now update MODEL_CARD.md with models/densenet121-kidney-sim/manifest.toml [metrics]"
