"""p(esrd) on 100 random heldout ROIs (seed 0) for PyTorch fp32 and each tract model; max|dp| vs fp32 and AUC."""
import sys, json, numpy as np, torch
from sklearn.metrics import roc_auc_score
from common import *
import tract
torch.set_num_threads(1)
data = rows("heldout", 100, seed=0)
X = np.concatenate([tensor_of(p) for p, _ in data]); y = np.array([l for _, l in data])
print(f"n={len(y)} positives={y.sum()}")
with torch.no_grad():
    p_ref = softmax_p1(load_model()(torch.from_numpy(X)).numpy())
res = {"torch_fp32": dict(auc=roc_auc_score(y, p_ref))}
for name, path in [a.split("=", 1) for a in sys.argv[1:]]:
    try:
        if path.endswith(".onnx"):
            m = tract.onnx().model_for_path(path); m.set_input_fact(0, "1,3,128,128,f32"); m = m.into_optimized()
        else:
            m = tract.nnef().with_tract_core().model_for_path(path).into_optimized()
        r = m.into_runnable()
        outs = np.concatenate([r.run([X[i:i+1]])[0].to_numpy().reshape(1, 2) for i in range(len(X))])
        # ONNX exports end in softmax already; NNEF exports give logits
        p = outs[:, 1].astype(np.float64) if path.endswith(".onnx") else softmax_p1(outs)
        d = np.abs(p - p_ref)
        res[name] = dict(auc=roc_auc_score(y, p), max_abs_dp_vs_torch_fp32=float(d.max()),
                         mean_abs_dp=float(d.mean()), label_flips_at_0_5=int(((p >= .5) != (p_ref >= .5)).sum()))
    except Exception as e:
        res[name] = dict(error=f"{type(e).__name__}: {e}")
    print(name, json.dumps(res[name]), flush=True)
json.dump(res, open(EXP / "accuracy.json", "w"), indent=1)
