"""Per-op-type time breakdown from tract's profiler (Model.profile_json)."""
import sys, json, collections
from common import *
import tract
x = golden_input()
for path in sys.argv[1:]:
    if path.endswith(".onnx"):
        m = tract.onnx().model_for_path(path); m.set_input_fact(0, "1,3,128,128,f32"); m = m.into_optimized()
    else:
        m = tract.nnef().with_tract_core().model_for_path(path).into_optimized()
    j = json.loads(m.profile_json([x], None))
    if False:
        print(json.dumps(j)[:1500])
    nodes = j.get("nodes", j)
    agg = collections.Counter(); cnt = collections.Counter()
    for n in nodes:
        op = n.get("op") or n.get("op_name") or str(n.get("name"))
        t = n.get("secs_per_iter", 0) or 0
        agg[op] += float(t); cnt[op] += 1
    tot = sum(agg.values())
    print(f"== {path}: total {tot*1e3:.1f} ms")
    for op, t in agg.most_common(12):
        print(f"  {op:40s} n={cnt[op]:4d} {t*1e3:8.2f} ms")
