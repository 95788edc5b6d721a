"""Eager-mode PyTorch post-training static quantization of the DenseNet121, structured so that
only ops torch_to_nnef can export to tract as quantized are quantized:
  quantized: conv0+norm0+relu0 (+pool0), each dense layer's conv1+norm2+relu2 -> conv2, transition convs
  float:     concat of features, the pre-activation BN+ReLU (norm1/relu1, transition norm, norm5),
             transition avgpool, head.
BN cannot be folded into the following conv (ReLU in between), so it stays float, like in the QDQ ONNX.
"""
import copy
import torch, torch.nn as nn, torch.nn.functional as F
from torch.ao.quantization import QuantStub, DeQuantStub, fuse_modules, prepare, convert, QConfig
from torch.ao.quantization.observer import HistogramObserver, MinMaxObserver, PerChannelMinMaxObserver


class QBlock(nn.Module):
    def __init__(self, body, fuse):
        super().__init__()
        self.quant, self.body, self.dequant = QuantStub(), body.eval(), DeQuantStub()
        if fuse:
            fuse_modules(self.body, [fuse], inplace=True)

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


class QLayer(nn.Module):
    def __init__(self, l):
        super().__init__()
        self.norm1, self.relu1 = l.norm1, nn.ReLU()
        self.q = QBlock(nn.Sequential(l.conv1, l.norm2, nn.ReLU(), l.conv2), ["0", "1", "2"])

    def forward(self, feats):
        return self.q(self.relu1(self.norm1(torch.cat(feats, 1))))


class QDenseBlock(nn.Module):
    def __init__(self, b):
        super().__init__()
        self.layers = nn.ModuleList([QLayer(l) for l in b.values()])

    def forward(self, x):
        feats = [x]
        for l in self.layers:
            feats.append(l(feats))
        return torch.cat(feats, 1)


class QTransition(nn.Module):
    def __init__(self, t):
        super().__init__()
        self.norm, self.relu = t.norm, nn.ReLU()
        self.q = QBlock(nn.Sequential(t.conv), None)
        self.pool = t.pool

    def forward(self, x):
        return self.pool(self.q(self.relu(self.norm(x))))


class QDenseNet(nn.Module):
    def __init__(self, m):
        super().__init__()
        f = m.features
        self.stem = QBlock(nn.Sequential(f.conv0, f.norm0, nn.ReLU(), f.pool0), ["0", "1", "2"])
        seq = []
        for name, mod in f.named_children():
            if name.startswith("denseblock"):
                seq.append(QDenseBlock(mod))
            elif name.startswith("transition"):
                seq.append(QTransition(mod))
        self.body = nn.Sequential(*seq)
        self.norm5 = f.norm5
        self.classifier = m.classifier

    def forward(self, x):
        x = self.body(self.stem(x))
        x = F.relu(self.norm5(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.classifier(x)


def qconfig(per_channel: bool):
    act = HistogramObserver.with_args(dtype=torch.quint8, reduce_range=False)
    if per_channel:
        w = PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    else:
        w = MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
    return QConfig(activation=act, weight=w)


def quantize(model, calib_batches, per_channel=False, engine="qnnpack"):
    torch.backends.quantized.engine = engine
    q = QDenseNet(copy.deepcopy(model).eval()).eval()
    q.train(False)
    for mod in q.modules():
        if isinstance(mod, QBlock):
            mod.qconfig = qconfig(per_channel)
    prepare(q, inplace=True)
    with torch.no_grad():
        for xb in calib_batches:
            q(xb)
    convert(q, inplace=True)
    return q
