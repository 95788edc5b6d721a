import sys, json, collections
from common import golden_input
import tract
r = tract.nnef().load(sys.argv[1]).into_runnable()
j = json.loads(r.profile_json([golden_input()]))
ns = sorted(j["nodes"], key=lambda n: -(n.get("secs_per_iter") or 0))
for n in ns[:12]:
    print(f'{(n.get("secs_per_iter") or 0)*1e3:7.3f} {n["op_name"]:20s} {n["node_name"][:100]}')
c = collections.Counter()
for n in j["nodes"]:
    if n["op_name"] in ("Cast", "Im2col"):
        kind = "quantize" if "quantize_per_tensor" in n["node_name"] else ("dequantize" if "dequant" in n["node_name"] else "other")
        c[(n["op_name"], kind)] += (n.get("secs_per_iter") or 0) * 1e3
print(c)
im = [n for n in j["nodes"] if n["op_name"] == "Im2col"][:3]; print([n["node_name"] for n in im])
