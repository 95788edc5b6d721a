#!/usr/bin/env python3
"""Writes tests/fixtures/metrics/crosscheck.json: fixed score sets with the numbers that
independent implementations give for them, which the Rust metric code must reproduce.

    python scripts/crosscheck_metrics.py [--check]   (needs scripts/requirements-eval.txt)

AUC and confusion matrices: scikit-learn. DeLong test (Z, P) and the per-model 95% CI: MLstatkit
(PyPI), whose z is (AUC_B - AUC_A) / SE like ours. --check recomputes and fails if the committed
fixture differs (so the fixture cannot drift from the libraries CI installs).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from MLstatkit import Delong_test
from sklearn.metrics import confusion_matrix, roc_auc_score

OUT = Path(__file__).resolve().parent.parent / "tests/fixtures/metrics/crosscheck.json"


def cases():
    rng = np.random.default_rng(20210611)
    out = []

    def add(name, y, a, b, threshold):
        out.append((name, np.asarray(y, int), np.asarray(a, float), np.asarray(b, float), threshold))

    # Balanced, continuous scores.
    y = np.r_[np.ones(60), np.zeros(60)]
    a = np.clip(rng.normal(0.65, 0.2, 120) * y + rng.normal(0.35, 0.2, 120) * (1 - y), 0, 1)
    b = np.clip(a + rng.normal(0, 0.15, 120), 0, 1)
    add("balanced_continuous", y, a, b, 0.5)
    # Heavy ties: model scores rounded to one decimal, reader on a 5-point scale.
    a2 = np.round(a, 1)
    reader = np.clip(np.round(b * 4) + 1, 1, 5)
    add("ties_and_5_point_reader", y, a2, reader, 0.5)
    # Unbalanced: 15 positives, 240 negatives.
    y3 = np.r_[np.ones(15), np.zeros(240)]
    a3 = np.r_[rng.normal(1.2, 1, 15), rng.normal(0, 1, 240)]
    b3 = np.r_[rng.normal(0.6, 1, 15), rng.normal(0, 1, 240)]
    add("unbalanced_15_vs_240", y3, a3, b3, 0.0)
    # Study-sized: 489 ESRD and 450 normal, a strong model and a 5-point reader.
    y4 = np.r_[np.ones(489), np.zeros(450)]
    a4 = 1 / (1 + np.exp(-(np.r_[rng.normal(2.2, 1.3, 489), rng.normal(-1.6, 1.3, 450)])))
    latent = np.r_[rng.normal(1.2, 1, 489), rng.normal(-0.6, 1, 450)]
    r4 = np.digitize(latent, [-1.0, -0.2, 0.6, 1.4]) + 1
    add("study_sized_489_vs_450", y4, a4, r4, 0.5)
    return out


def compute():
    result = []
    for name, y, a, b, thr in cases():
        z, p, ci_a, ci_b, auc_a, auc_b, info = Delong_test(y, a, b, return_ci=True, return_auc=True)
        assert info["method"] == "delong", name
        tn, fp, fn, tp = confusion_matrix(y, (a >= thr).astype(int), labels=[0, 1]).ravel()
        result.append({
            "name": name, "labels": y.tolist(), "scores_a": a.tolist(), "scores_b": b.tolist(),
            "threshold": thr,
            "sklearn_auc_a": float(roc_auc_score(y, a)), "sklearn_auc_b": float(roc_auc_score(y, b)),
            "sklearn_confusion_a": {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)},
            "mlstatkit_z": float(z), "mlstatkit_p": float(p),
            "mlstatkit_auc_a": float(auc_a), "mlstatkit_auc_b": float(auc_b),
            "mlstatkit_ci_a": [float(ci_a[0]), float(ci_a[1])], "mlstatkit_ci_b": [float(ci_b[0]), float(ci_b[1])],
        })
    return {"generator": "scripts/crosscheck_metrics.py", "cases": result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    data = compute()
    if args.check:
        old = json.loads(OUT.read_text())
        for new_case, old_case in zip(data["cases"], old["cases"], strict=True):
            for k, v in new_case.items():
                ov = old_case[k]
                if isinstance(v, float) and not np.isclose(v, ov, rtol=0, atol=1e-12):
                    print(f"{new_case['name']}.{k}: fixture {ov} but libraries now give {v}")
                    return 1
        print(f"{OUT} agrees with scikit-learn and MLstatkit")
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1))
    for c in data["cases"]:
        print(f"{c['name']}: AUC {c['sklearn_auc_a']:.4f} vs {c['sklearn_auc_b']:.4f}, Z {c['mlstatkit_z']:.3f}, P {c['mlstatkit_p']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
