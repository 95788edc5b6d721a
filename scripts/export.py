#!/usr/bin/env python3
"""Export a trained checkpoint to ONNX, quantize it to int8, check parity, write the model dir.

    python scripts/export.py --checkpoint OUT/model.pt --train-report OUT/train_report.json \
        --calibration DATA/train --heldout DATA/heldout --binary target/release/kidney-screen \
        --out models/densenet121-kidney-sim

Writes into --out: model.int8.onnx (static QDQ: u8 activations, s8 per-channel weights),
manifest.toml, MODEL_CARD.md, golden/ (ROI crops, the resized ROIs, the exact tensors the
training transform makes of them, onnxruntime's probabilities) and parity.json. The fp32 model
goes to --out-fp32 with its own manifest, for speed and accuracy comparisons.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torchvision
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kidney_model import metrics, transforms  # noqa: E402

MODEL_ID = "densenet121-kidney-sim"
VERSION = "1.0.0"
OPSET = 13
# Largest |p_tract - p_onnxruntime| accepted. fp32: float summation order only. int8: the two
# runtimes round some activations to the neighbouring quantization step (measured 1.4e-2 on 100
# held-out ROIs, with 100% verdict agreement), well under int8-vs-fp32 drift (9e-2).
TRACT_FP32_TOLERANCE = 1e-4
TRACT_INT8_TOLERANCE = 3e-2


def log(msg: str) -> None:
    print(f"[export {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class WithSoftmax(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


def export_fp32(checkpoint: Path, path: Path) -> None:
    net = torchvision.models.densenet121(weights=None, num_classes=2)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model = WithSoftmax(net).eval()
    dummy = torch.zeros(1, 3, transforms.INPUT_SIZE, transforms.INPUT_SIZE)
    torch.onnx.export(
        model, dummy, str(path), input_names=["input"], output_names=["probabilities"],
        opset_version=OPSET, dynamo=False,
    )


class RoiReader(CalibrationDataReader):
    def __init__(self, paths):
        self.items = iter(paths)

    def get_next(self):
        p = next(self.items, None)
        if p is None:
            return None
        return {"input": transforms.to_tensor(transforms.load_roi(p))[None]}


def ort_scores(model: Path, paths) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    out = []
    for p in paths:
        x = transforms.to_tensor(transforms.load_roi(p))[None]
        out.append(float(sess.run(None, {"input": x})[0][0, 1]))
    return np.array(out)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tract_scores(binary: Path, model_dir: Path, paths) -> np.ndarray:
    cmd = [str(binary), "classify", "--roi-input", "--json", "--model", str(model_dir), *map(str, paths)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return np.array([json.loads(line)["probability"] for line in out.splitlines()])


def toml_table(d: dict) -> str:
    def val(v):
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(round(v, 6))
        return str(v)
    return "\n".join(f"{k} = {val(v)}" for k, v in d.items())


def write_manifest(out: Path, file: str, quant: dict, training: dict, metric: dict) -> None:
    text = f"""# Model manifest: read by kidney-screen at start-up (hash and shapes are checked).
id = "{MODEL_ID}{'-int8' if 'int8' in file else '-fp32'}"
version = "{VERSION}"
architecture = "DenseNet121 (torchvision), 2-class head, softmax in the graph"
file = "{file}"
sha256 = "{sha256(out / file)}"
intended_use = "Screening aid for trained staff. Not a diagnosis. Trained on SIMULATED phantoms only: not for clinical use until retrained and validated on site data."

[input]
width = {transforms.INPUT_SIZE}
height = {transforms.INPUT_SIZE}
channels = 3

[normalization]
mean = {list(transforms.MEAN)}
std = {list(transforms.STD)}

[output]
kind = "probabilities"
labels = {json.dumps(list(transforms.LABELS))}
positive_label = "{transforms.POSITIVE_LABEL}"

[decision]
threshold = 0.5
indeterminate = [0.35, 0.65]

[quantization]
{toml_table(quant)}

[training]
{toml_table(training)}

[metrics]
{toml_table(metric)}
"""
    (out / "manifest.toml").write_text(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--train-report", required=True, type=Path)
    p.add_argument("--calibration", required=True, type=Path, help="dir with labels.csv (training ROIs)")
    p.add_argument("--heldout", required=True, type=Path, help="dir with labels.csv, rois/ and crops/")
    p.add_argument("--binary", type=Path, help="kidney-screen binary for the tract parity check")
    p.add_argument("--out", type=Path, default=Path(f"models/{MODEL_ID}"))
    p.add_argument("--out-fp32", type=Path, default=Path(f"models/{MODEL_ID}-fp32"))
    p.add_argument("--calibration-count", type=int, default=200)
    p.add_argument("--goldens", type=int, default=4)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.out_fp32.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".export-tmp"
    tmp.mkdir(exist_ok=True)
    fp32 = args.out_fp32 / "model.fp32.onnx"
    log("exporting fp32 ONNX")
    export_fp32(args.checkpoint, fp32)
    pre = tmp / "model.pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    calib_rows = transforms.read_labels(args.calibration / "labels.csv")
    rng = np.random.default_rng(0)
    calib = [calib_rows[i][0] for i in rng.choice(len(calib_rows), args.calibration_count, replace=False)]
    int8 = args.out / "model.int8.onnx"
    log(f"static int8 quantization (QOperator QLinearConv, per-tensor s8 weights, u8 activations, {len(calib)} calibration ROIs)")
    # Measured with tract-onnx 0.23.9 (README "Speed"): the QOperator graph runs every convolution
    # as an int8 matmul, while a QDQ graph runs them in float between quantize/dequantize pairs
    # (slower than the fp32 model). Per-channel weights are correct in tract 0.23 but requantize
    # through separate ops (82 ms), and quantized BatchNormalization gave wrong outputs in 0.22:
    # so Conv only, per tensor. The classifier Gemm (1024x2) stays float.
    quantize_static(
        str(pre), str(int8), RoiReader(calib), quant_format=QuantFormat.QOperator, per_channel=False,
        op_types_to_quantize=["Conv"],
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )
    shutil.rmtree(tmp)
    held = transforms.read_labels(args.heldout / "labels.csv")
    paths = [p for p, _ in held]
    y = np.array([l for _, l in held])
    log(f"scoring {len(paths)} held-out phantoms with onnxruntime fp32 and int8")
    s_fp32, s_int8 = ort_scores(fp32, paths), ort_scores(int8, paths)
    m_fp32, m_int8 = metrics.binary_metrics(y, s_fp32, 0.5), metrics.binary_metrics(y, s_int8, 0.5)
    log(f"held-out AUC fp32 {m_fp32['auc']:.4f} int8 {m_int8['auc']:.4f}; acc fp32 {m_fp32['accuracy']:.4f} int8 {m_int8['accuracy']:.4f}")
    report = json.loads(args.train_report.read_text())
    seeds = [int(r["seed"]) for r in csv.DictReader((args.heldout / "labels.csv").open()) if r.get("seed")]
    heldout_seeds = f"{min(seeds)}..{max(seeds)}" if seeds else "unknown"
    quant = {
        "scheme": "static QOperator (onnxruntime quantize_static): QLinearConv on every Conv, per-tensor symmetric int8 weights, uint8 activations; Gemm float",
        "calibration": f"{len(calib)} training ROIs, MinMax",
        "fp32_file_sha256": sha256(fp32),
    }
    training = {
        "data": f"SIMULATED kidney phantoms only (kidney-screen simulate, seeds 1..{report['n']}); no patient data",
        "images": report["n"],
        "split": f"validation {len(report.get('history', [])) and 'held out by seed'} ({report['seed']})",
        "epochs": report["epochs"],
        "best_epoch": report["best_epoch"],
        "init": report["pretrained"],
        "machine": report["machine"],
        "train_minutes": round(report["train_seconds"] / 60, 1),
        "torch": report["torch"],
        "exported": datetime.date.today().isoformat(),
    }
    metric = {
        "heldout": f"{len(paths)} simulated phantoms, seeds {heldout_seeds} (never used in training)",
        "auc": m_int8["auc"], "accuracy": m_int8["accuracy"], "sensitivity": m_int8["sensitivity"],
        "specificity": m_int8["specificity"], "fp32_auc": m_fp32["auc"],
        "int8_minus_fp32_auc": m_int8["auc"] - m_fp32["auc"],
    }
    write_manifest(args.out, "model.int8.onnx", quant, training, metric)
    write_manifest(args.out_fp32, "model.fp32.onnx", {"scheme": "none (fp32)"}, training,
                   {**metric, "auc": m_fp32["auc"], "accuracy": m_fp32["accuracy"],
                    "sensitivity": m_fp32["sensitivity"], "specificity": m_fp32["specificity"]})
    # Goldens: crops as the dongle would give them, resized ROIs, tensors, ORT probabilities.
    gold = args.out / "golden"
    gold.mkdir(exist_ok=True)
    picks = [i for i in range(len(held)) if held[i][1] == 0][: args.goldens // 2] + \
            [i for i in range(len(held)) if held[i][1] == 1][: args.goldens - args.goldens // 2]
    entries = []
    for i in picks:
        roi = paths[i]
        crop = args.heldout / "crops" / roi.name
        shutil.copy(crop, gold / f"{roi.stem}.crop.png")
        shutil.copy(roi, gold / f"{roi.stem}.roi.png")
        tensor = transforms.to_tensor(transforms.load_roi(roi))
        tensor.astype("<f4").tofile(gold / f"{roi.stem}.tensor.f32")
        entries.append({"name": roi.stem, "label": transforms.LABELS[y[i]],
                        "ort_int8": float(s_int8[i]), "ort_fp32": float(s_fp32[i])})
    (gold / "golden.json").write_text(json.dumps({"input_size": transforms.INPUT_SIZE, "cases": entries}, indent=2))
    parity = {"heldout_fp32": m_fp32, "heldout_int8": m_int8,
              "max_abs_ort_int8_vs_fp32": float(np.abs(s_int8 - s_fp32).max())}
    if args.binary:
        n = min(100, len(paths))
        log(f"tract parity on {n} held-out ROIs")
        t8 = tract_scores(args.binary, args.out, paths[:n])
        t32 = tract_scores(args.binary, args.out_fp32, paths[:n])
        parity["tract_int8_vs_ort_int8_max_abs"] = float(np.abs(t8 - s_int8[:n]).max())
        parity["tract_fp32_vs_ort_fp32_max_abs"] = float(np.abs(t32 - s_fp32[:n]).max())
        parity["tract_int8_vs_ort_int8_verdict_agreement"] = float(np.mean((t8 >= 0.5) == (s_int8[:n] >= 0.5)))
        log(f"tract vs onnxruntime: int8 max |dp| {parity['tract_int8_vs_ort_int8_max_abs']:.2e}, fp32 {parity['tract_fp32_vs_ort_fp32_max_abs']:.2e}")
    (args.out / "parity.json").write_text(json.dumps(parity, indent=2))
    if args.binary and (parity["tract_int8_vs_ort_int8_max_abs"] > TRACT_INT8_TOLERANCE
                        or parity["tract_fp32_vs_ort_fp32_max_abs"] > TRACT_FP32_TOLERANCE):
        log("FAILED: tract disagrees with onnxruntime beyond tolerance (parity.json); do not ship this model")
        return 1
    log(f"wrote {args.out} (int8 {int8.stat().st_size / 1e6:.1f} MB) and {args.out_fp32}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
