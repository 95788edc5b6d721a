import sys, time, numpy as np, torch
from common import *
from quant_model import QDenseNet, quantize
from torch_to_nnef import export_model_to_nnef, TractNNEF
torch.set_num_threads(2)
per_channel = "--per-channel" in sys.argv
ncal = 256
m = load_model()
x = torch.from_numpy(golden_input())
with torch.no_grad():
    ref = m(x)
    # sanity: restructured float model is the same function
    print("restructured float max|dlogit|", (QDenseNet(__import__("copy").deepcopy(m)).eval()(x) - ref).abs().max().item())
cal = np.concatenate([tensor_of(p) for p, _ in rows("train", ncal, seed=1)])
batches = [torch.from_numpy(cal[i:i + 32]) for i in range(0, ncal, 32)]
t = time.time()
q = quantize(m, batches, per_channel=per_channel)
print(f"calibrated on {ncal} train ROIs in {time.time()-t:.0f}s")
with torch.no_grad():
    print("torch fp32 logits", ref.numpy(), "torch int8 logits", q(x).numpy())
tag = "int8_pc" if per_channel else "int8"
torch.save(q.state_dict(), EXP / f"out/{tag}/qmodel_state.pt")
target = TractNNEF("0.22.4", check_io=False, specific_tract_binary_path=EXP / "fakebin/tract",
                   dump_identity_properties=False)
p = export_model_to_nnef(q, (x,), EXP / f"out/{tag}/model.nnef", inference_target=target,
                         input_names=["input"], output_names=["logits"], compression_level=0)
print("exported", p)
