"""Rewrite the exported int8 NNEF: replace each activation quantize `X = tract_core_cast(f32)` (X typed
QU8 via graph.quant) by explicit float math + a plain f32->u8 cast + a u8->QU8 cast, to test whether
tract's slow quantizing Cast is avoidable. Usage: rewrite_quantize.py in.nnef.tar out.nnef.tar"""
import re, sys, tarfile, io, shutil, tempfile, os
src, dst = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "round"  # round | floor_clamp | floor_noclamp
tmp = tempfile.mkdtemp()
tarfile.open(src).extractall(tmp)
quant = open(f"{tmp}/graph.quant").read()
qp = {m[0]: (float(m[2]), int(m[1])) for m in re.findall(
    r'"(\w+_quantize_per_tensor0)": zero_point_linear_quantize\(zero_point = (\d+), scale = ([0-9.e-]+)', quant)}
out, n = [], 0
for line in open(f"{tmp}/graph.nnef"):
    m = re.match(r"(\s*)(\w+) = tract_core_cast\((\w+)\);$", line.rstrip("\n"))
    if m and m.group(2) in qp:
        ind, name, x = m.groups(); s, z = qp[name]
        if mode == "round":  # clamp(round(x/s)+z) then cast: tract's Round op turns out to be slow
            out += [f"{ind}{name}_m = mul({x}, {1.0/s!r});", f"{ind}{name}_r = round({name}_m);",
                    f"{ind}{name}_a = add({name}_r, {float(z)!r});", f"{ind}{name}_c = clamp({name}_a, 0.0, 255.0);",
                    f"{ind}{name}_u = tract_core_cast({name}_c, to = 'u8');"]
        else:  # round-half-up via x/s + z + 0.5 then truncating f32->u8 cast (values >= 0 after clamp)
            out += [f"{ind}{name}_m = mul({x}, {1.0/s!r});", f"{ind}{name}_a = add({name}_m, {float(z) + 0.5!r});"]
            last = f"{name}_a"
            if mode == "floor_clamp":
                out += [f"{ind}{name}_c = clamp({name}_a, 0.0, 255.0);"]; last = f"{name}_c"
            out += [f"{ind}{name}_u = tract_core_cast({last}, to = 'u8');"]
        out += [f"{ind}{name} = tract_core_cast({name}_u);"]
        n += 1
    else:
        out.append(line.rstrip("\n"))
open(f"{tmp}/graph.nnef", "w").write("\n".join(out) + "\n")
print("rewrote", n, "quantize casts")
with tarfile.open(dst, "w") as t:
    for f in sorted(os.listdir(tmp)):
        t.add(f"{tmp}/{f}", arcname=f)
shutil.rmtree(tmp)
