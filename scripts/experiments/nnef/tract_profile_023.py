"""Per-op-type breakdown with tract 0.23.x Python API (Runnable.profile_json)."""
import sys, json, collections
from common import golden_input
import tract
x = golden_input()
for path in sys.argv[1:]:
    if path.endswith(".onnx"):
        m = tract.onnx().load(path); m.set_input_fact(0, "1,3,128,128,f32"); r = m.into_model().into_runnable()
    else:
        r = tract.nnef().load(path).into_runnable()
    j = json.loads(r.profile_json([x]))
    agg = collections.Counter(); cnt = collections.Counter()
    for n in j["nodes"]:
        agg[n["op_name"]] += n.get("secs_per_iter") or 0; cnt[n["op_name"]] += 1
    print(f"== {path}: total {sum(agg.values())*1e3:.1f} ms")
    for op, t in agg.most_common(8):
        print(f"  {op:30s} n={cnt[op]:4d} {t*1e3:8.2f} ms")
