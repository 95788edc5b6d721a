"""Latency of tract (Python bindings) on NNEF and ONNX models; 1x3x128x128 golden input."""
import os, sys, json
from common import *
import tract
print("tract python", tract.version(), tract.__file__)
x = golden_input()

def load(path):
    path = str(path)
    if not hasattr(tract.Nnef, "model_for_path"):  # tract >= 0.23 Python API
        if path.endswith(".onnx"):
            m = tract.onnx().load(path); m.set_input_fact(0, "1,3,128,128,f32")
            return m.into_model().into_runnable()
        return tract.nnef().load(path).into_runnable()
    if path.endswith(".onnx"):
        m = tract.onnx().model_for_path(path)
        m.set_input_fact(0, "1,3,128,128,f32")
        m = m.into_optimized()
    else:
        m = tract.nnef().with_tract_core().model_for_path(path).into_optimized()
    return m.into_runnable()

res = {}
for name, path in [a.split("=", 1) for a in sys.argv[1:]]:
    try:
        r = load(path)
        f = lambda v: r.run([v])[0].to_numpy()
        out = f(x)
        c0, w0 = time.process_time(), time.perf_counter()
        med, p95 = bench(f, x)
        cpu_ratio = (time.process_time() - c0) / (time.perf_counter() - w0)  # ~1.0 => one thread busy
        res[name] = dict(median_ms=med, p95_ms=p95, cpu_per_wall=round(cpu_ratio, 2), logits=out.ravel().tolist(), p_esrd=float(out.ravel()[1] if str(path).endswith('.onnx') else softmax_p1(out)[0]))
    except Exception as e:
        s = str(e); res[name] = dict(error=f"{type(e).__name__}: " + (s if len(s) < 400 else s[:300] + " ... " + s.split("\\n")[0][-80:]))
    print(name, json.dumps(res[name]), flush=True)
