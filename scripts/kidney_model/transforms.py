"""The training transform. It must equal src/preprocess.rs, and tests/integration prove it.

Geometry (screen location, ROI crop, resize) is done by the Rust code only: `kidney-screen
simulate` and `kidney-screen prepare` write ROIs already at the model input size, so training
and the device see the same pixels. What remains here is the per-pixel step, written with the
same float32 operations in the same order as Rust: (v / 255 - mean[c]) / std[c].
"""
from __future__ import annotations

import numpy as np
from PIL import Image

# Model input and normalisation. ImageNet statistics, so ImageNet weights can be fine-tuned;
# written into models/<id>/manifest.toml by export.py, which Rust reads.
INPUT_SIZE = 128
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
LABELS = ("normal", "esrd")
POSITIVE_LABEL = "esrd"


def load_roi(path) -> np.ndarray:
    """A model-sized greyscale ROI as uint8 HxW. Anything else is an error naming the file."""
    with Image.open(path) as im:
        if im.size != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"{path}: ROI is {im.size[0]}x{im.size[1]}, the model takes {INPUT_SIZE}x{INPUT_SIZE}; "
                "cut and resize images with `kidney-screen prepare` first"
            )
        return np.asarray(im.convert("L"), dtype=np.uint8)


def to_tensor(roi_u8: np.ndarray) -> np.ndarray:
    """uint8 HxW -> float32 3xHxW, exactly as Rust's Preprocessor::normalize_resized."""
    v = roi_u8.astype(np.float32) / np.float32(255.0)
    out = np.empty((3,) + roi_u8.shape, dtype=np.float32)
    for c in range(3):
        out[c] = (v - np.float32(MEAN[c])) / np.float32(STD[c])
    return out


def read_labels(csv_path):
    """Rows of (file, label 0/1) from a labels CSV (file,label[,...]); errors name the row."""
    import csv
    from pathlib import Path

    rows = []
    base = Path(csv_path).parent
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "file" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: needs a header with 'file' and 'label' columns")
        for line, row in enumerate(reader, start=2):
            label = row["label"].strip().lower()
            if label in ("esrd", "1"):
                y = 1
            elif label in ("normal", "0"):
                y = 0
            else:
                raise ValueError(f"{csv_path}:{line}: unknown label {row['label']!r} (esrd/normal or 1/0)")
            path = base / row["file"]
            if not path.is_file():
                raise ValueError(f"{csv_path}:{line}: file {row['file']!r} not found")
            rows.append((path, y))
    return rows
