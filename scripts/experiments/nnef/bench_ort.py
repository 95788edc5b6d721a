"""Same-session onnxruntime reference (1 intra/inter-op thread)."""
import sys, json, onnxruntime as ort
from common import golden_input, bench
x = golden_input()
print("onnxruntime", ort.__version__)
for name, path in [a.split("=", 1) for a in sys.argv[1:]]:
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0].name
    med, p95 = bench(lambda v: s.run(None, {i: v}), x)
    print(name, json.dumps(dict(median_ms=med, p95_ms=p95)))
