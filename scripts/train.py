#!/usr/bin/env python3
"""Train the DenseNet121 ESRD/normal classifier on model-sized ROIs.

    python scripts/train.py --data DIR --out OUT [--epochs 10] [--folds 5] [--pretrained imagenet.pth]

DIR holds labels.csv (file,label) and the ROIs it names, as `kidney-screen simulate` or
`kidney-screen prepare` write them. The validation split is held out by --seed. With --folds K
the study's protocol (5 runs) is followed: K models on K folds, per-fold metrics written as the
same JSON `kidney-screen eval` writes, then the final model trained on the train split.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kidney_model import metrics, transforms  # noqa: E402


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def build_model(pretrained: str | None) -> torch.nn.Module:
    model = torchvision.models.densenet121(weights=None, num_classes=2)
    if pretrained:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        missing, _ = model.load_state_dict(state, strict=False)
        log(f"initialised from ImageNet weights {pretrained} (new head: {missing})")
    else:
        log("no --pretrained weights given: training from scratch")
    return model


class Augment:
    """Ultrasound-plausible augmentation on uint8 ROIs: gain/contrast, shift, left-right flip."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def __call__(self, roi: np.ndarray) -> np.ndarray:
        r = self.rng
        img = roi.astype(np.float32)
        img = img * r.uniform(0.85, 1.15) + r.uniform(-15, 15)
        pad = 8
        padded = np.pad(img, pad, mode="reflect")
        dy, dx = r.integers(0, 2 * pad + 1, size=2)
        img = padded[dy : dy + roi.shape[0], dx : dx + roi.shape[1]]
        if r.random() < 0.5:
            img = img[:, ::-1]
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def batches(images, labels, idx, batch, augment=None, rng=None):
    order = idx.copy()
    if rng is not None:
        rng.shuffle(order)
    for s in range(0, len(order), batch):
        sel = order[s : s + batch]
        x = np.stack([transforms.to_tensor(augment(images[i]) if augment else images[i]) for i in sel])
        yield torch.from_numpy(x), torch.from_numpy(labels[sel]).long()


@torch.no_grad()
def predict(model, images, labels, idx, batch=64) -> np.ndarray:
    model.eval()
    out = []
    for x, _ in batches(images, labels, idx, batch):
        out.append(torch.softmax(model(x), dim=1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train_one(images, labels, train_idx, val_idx, args, tag) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = build_model(args.pretrained)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * ((len(train_idx) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    augment = Augment(rng)
    best = (-1.0, None, 0)
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0, total, n = time.time(), 0.0, 0
        for x, y in batches(images, labels, train_idx, args.batch, augment, rng):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(y)
            n += len(y)
        scores = predict(model, images, labels, val_idx)
        auc = roc_auc_score(labels[val_idx], scores)
        acc = float(np.mean((scores >= 0.5) == labels[val_idx]))
        history.append({"epoch": epoch, "loss": total / n, "val_auc": auc, "val_acc": acc, "seconds": time.time() - t0})
        log(f"{tag} epoch {epoch}/{args.epochs} loss {total / n:.4f} val AUC {auc:.4f} acc {acc:.4f} ({time.time() - t0:.0f} s)")
        if auc > best[0]:
            best = (auc, {k: v.clone() for k, v in model.state_dict().items()}, epoch)
    model.load_state_dict(best[1])
    log(f"{tag} best val AUC {best[0]:.4f} at epoch {best[2]}")
    return model, {"history": history, "best_epoch": best[2], "best_val_auc": best[0]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--folds", type=int, default=0, help="k-fold runs before the final model (the study: 5)")
    p.add_argument("--seed", type=int, default=20210611)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    p.add_argument("--pretrained", help="path to torchvision ImageNet densenet121 weights (.pth)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = transforms.read_labels(args.data / "labels.csv")
    images = np.stack([transforms.load_roi(path) for path, _ in rows])
    labels = np.array([y for _, y in rows], dtype=np.int64)
    log(f"{len(rows)} ROIs ({labels.sum()} esrd, {len(labels) - labels.sum()} normal) from {args.data}")
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(rows))
    started = time.time()
    report = {
        "data": str(args.data),
        "n": len(rows),
        "seed": args.seed,
        "epochs": args.epochs,
        "input_size": transforms.INPUT_SIZE,
        "machine": f"{platform.machine()} {platform.processor() or ''} {torch.get_num_threads()} threads".strip(),
        "torch": torch.__version__,
        "pretrained": args.pretrained or "none (from scratch)",
    }
    if args.folds > 1:
        fold_of = np.empty(len(rows), dtype=np.int64)
        fold_of[perm] = np.arange(len(rows)) % args.folds
        fold_rows = []
        for k in range(args.folds):
            val_idx = np.where(fold_of == k)[0]
            train_idx = np.where(fold_of != k)[0]
            model, _ = train_one(images, labels, train_idx, val_idx, args, f"fold {k + 1}/{args.folds}")
            scores = predict(model, images, labels, val_idx)
            m = metrics.binary_metrics(labels[val_idx], scores, 0.5)
            m["fold"] = k + 1
            fold_rows.append(m)
        report["folds"] = fold_rows
        report["folds_summary"] = metrics.mean_sd(fold_rows)
    n_val = int(round(len(rows) * args.val_fraction))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    model, info = train_one(images, labels, train_idx, val_idx, args, "final")
    report.update(info)
    report["validation"] = metrics.binary_metrics(labels[val_idx], predict(model, images, labels, val_idx), 0.5)
    report["train_seconds"] = time.time() - started
    torch.save(model.state_dict(), args.out / "model.pt")
    (args.out / "val_files.txt").write_text("".join(f"{rows[i][0]}\n" for i in val_idx))
    (args.out / "train_report.json").write_text(json.dumps(report, indent=2))
    log(f"saved {args.out / 'model.pt'}; {report['train_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
