import torch, logging
from common import *
from torch_to_nnef import export_model_to_nnef, TractNNEF
torch.set_num_threads(1)
m = load_model()
x = torch.from_numpy(golden_input())
target = TractNNEF("0.22.4", check_io=False, specific_tract_binary_path=EXP / "fakebin/tract",
                   dump_identity_properties=False)
p = export_model_to_nnef(m, (x,), EXP / "out/fp32/model.nnef", inference_target=target,
                         input_names=["input"], output_names=["logits"], compression_level=0)
print("exported", p)
print("torch logits", m(x).detach().numpy())
