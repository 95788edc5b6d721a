import os
import csv, sys, time
from pathlib import Path
import numpy as np, torch, torchvision
REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "scripts"))
from kidney_model.transforms import load_roi, to_tensor

EXP = Path(os.environ.get("NNEF_EXP_DIR", "out-nnef-experiment")).resolve()
GOLD = REPO / "models/densenet121-kidney-sim/golden"

def load_model():
    m = torchvision.models.densenet121(weights=None, num_classes=2)
    sd = torch.load(os.environ.get("CHECKPOINT", "train_out/model.pt"), map_location="cpu", weights_only=True)
    m.load_state_dict(sd)
    return m.eval()

def golden_input():
    x = np.fromfile(GOLD / "esrd_1000003.tensor.f32", dtype=np.float32).reshape(1, 3, 128, 128)
    return x

def rows(split, n=None, seed=0):
    base = Path(os.environ.get("DATA_DIR", "data")) / split
    r = list(csv.DictReader(open(base / "labels.csv")))
    if n is not None:
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(r), size=n, replace=False)
        r = [r[i] for i in sorted(idx)]
    return [(base / x["file"], 1 if x["label"] == "esrd" else 0) for x in r]

def tensor_of(path):
    return to_tensor(load_roi(path))[None]

def softmax_p1(logits):
    l = np.asarray(logits, dtype=np.float64).reshape(-1, 2)
    e = np.exp(l - l.max(1, keepdims=True))
    return (e[:, 1] / e.sum(1))

def bench(fn, x, warm=5, n=30):
    for _ in range(warm):
        fn(x)
    ts = []
    for _ in range(n):
        t = time.perf_counter(); fn(x); ts.append((time.perf_counter() - t) * 1e3)
    ts = np.array(ts)
    return float(np.median(ts)), float(np.percentile(ts, 95))
