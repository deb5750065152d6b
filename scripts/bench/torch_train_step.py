"""PyTorch-eager reference for `trainer bench`: the same backbone, ArcFace head, SGD and batch.

The architectures are written out here from trainer/src/model/{iresnet,mobilefacenet,layers}.rs
(not imported from insightface) so the parameter count can be checked against `trainer models`.
Settings mirror trainer/src/bench.rs: random (B,3,112,112) input, 1000 classes, ArcFace s=64
m=0.5 (exact gradient, cosines clamped to 1e-3 of +-1), SGD lr 0.1 momentum 0.9 wd 5e-4 over
every trainable tensor, one warm-up step, then the mean of `steps` steps.
Prints one JSON object: params, ms per step, images per second, last loss, threads.
"""

import argparse
import json
import math
import time

import torch
from torch import nn
import torch.nn.functional as F

COS_EPS = 1e-3


def bn2d(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


def conv(i, o, k, s, p, groups=1):
    return nn.Conv2d(i, o, k, s, p, groups=groups, bias=False)


class FixedGammaBN1d(nn.BatchNorm1d):
    """The iResNet `features` BN: gamma stays 1 (arcface_torch freezes it)."""

    def __init__(self, c):
        super().__init__(c, eps=1e-5, momentum=0.1)
        self.weight.requires_grad = False


class IBasicBlock(nn.Module):
    def __init__(self, in_c, out_c, stride):
        super().__init__()
        self.bn1 = bn2d(in_c)
        self.conv1 = conv(in_c, out_c, 3, 1, 1)
        self.bn2 = bn2d(out_c)
        self.prelu = nn.PReLU(out_c, init=0.25)
        self.conv2 = conv(out_c, out_c, 3, stride, 1)
        self.bn3 = bn2d(out_c)
        self.downsample = None
        if stride != 1 or in_c != out_c:
            self.downsample = nn.Sequential(conv(in_c, out_c, 1, stride, 0), bn2d(out_c))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, blocks, widths, stem, dim, size=112):
        super().__init__()
        self.conv1 = conv(3, stem, 3, 1, 1)
        self.bn1 = bn2d(stem)
        self.prelu = nn.PReLU(stem, init=0.25)
        layers, in_c, hw = [], stem, size
        for n, w in zip(blocks, widths):
            stage = []
            for b in range(n):
                stride = 2 if b == 0 else 1
                stage.append(IBasicBlock(in_c, w, stride))
                in_c = w
                hw = (hw + 2 - 3) // stride + 1
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn2 = bn2d(in_c)
        self.fc = nn.Linear(in_c * hw * hw, dim)
        self.features = FixedGammaBN1d(dim)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


class ConvBlock(nn.Module):
    def __init__(self, i, o, k, s, p, groups=1):
        super().__init__()
        self.layers = nn.Sequential(conv(i, o, k, s, p, groups), bn2d(o), nn.PReLU(o, init=0.25))

    def forward(self, x):
        return self.layers(x)


class LinearBlock(nn.Module):
    def __init__(self, i, o, k, s, p, groups=1):
        super().__init__()
        self.layers = nn.Sequential(conv(i, o, k, s, p, groups), bn2d(o))

    def forward(self, x):
        return self.layers(x)


class DepthWise(nn.Module):
    def __init__(self, in_c, out_c, stride, expansion, residual):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(
            ConvBlock(in_c, expansion, 1, 1, 0),
            ConvBlock(expansion, expansion, 3, stride, 1, groups=expansion),
            LinearBlock(expansion, out_c, 1, 1, 0),
        )

    def forward(self, x):
        out = self.layers(x)
        return out + x if self.residual else out


class Residual(nn.Module):
    def __init__(self, c, blocks, expansion):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(c, c, 1, expansion, True) for _ in range(blocks)])

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """insightface `mbf`: scale 2, blocks (1,4,6,2), GDC head."""

    def __init__(self, dim, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        c1, c2 = 64 * scale, 128 * scale
        layers = [ConvBlock(3, c1, 3, 2, 1)]
        if blocks[0] == 1:
            layers.append(ConvBlock(c1, c1, 3, 1, 1, groups=64))
        else:
            layers.append(Residual(c1, blocks[0], 128))
        for in_c, out_c, exp_down, exp_res, n in [
            (c1, c1, 128, 128, blocks[1]),
            (c1, c2, 256, 256, blocks[2]),
            (c2, c2, 512, 256, blocks[3]),
        ]:
            layers.append(DepthWise(in_c, out_c, 2, exp_down, False))
            layers.append(Residual(out_c, n, exp_res))
        self.layers = nn.ModuleList(layers)
        self.conv_sep = ConvBlock(c2, 512, 1, 1, 0)
        self.features = GDC(dim)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


class GDC(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.layers = nn.Sequential(
            LinearBlock(512, 512, 7, 1, 0, groups=512),
            nn.Flatten(),
            nn.Linear(512, dim, bias=False),
            nn.BatchNorm1d(dim, eps=1e-5, momentum=0.1),
        )

    def forward(self, x):
        return self.layers(x)


def backbone(name, dim):
    if name == "tiny":
        return IResNet([1, 1, 1, 1], [8, 16, 32, 64], 8, dim)
    if name == "mbf":
        return MobileFaceNet(dim)
    raise SystemExit(f"unknown backbone {name!r} (this reference has tiny and mbf)")


class ArcFace(nn.Module):
    def __init__(self, classes, dim, s=64.0, m=0.5):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb, labels):
        cos = F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).t()
        cos = cos.clamp(-1 + COS_EPS, 1 - COS_EPS)
        cos_y = cos.gather(1, labels[:, None]).squeeze(1)
        theta = torch.acos(cos_y)
        target = torch.where(theta + self.m <= math.pi, torch.cos(theta + self.m),
                             cos_y - self.m * math.sin(self.m))
        logits = cos.scatter(1, labels[:, None], target[:, None]) * self.s
        return F.cross_entropy(logits, labels)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--backbone", default="tiny")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--embedding-dim", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--classes", type=int, default=1000)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    net = backbone(a.backbone, a.embedding_dim).train()
    head = ArcFace(a.classes, a.embedding_dim)
    params = sum(t.numel() for t in net.parameters())
    trainable = [t for t in list(net.parameters()) + list(head.parameters()) if t.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, 112, 112)
    y = torch.randint(a.classes, (a.batch,))

    def step():
        loss = head(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    step()
    t = time.perf_counter()
    loss = float("nan")
    for _ in range(a.steps):
        loss = step()
    ms = (time.perf_counter() - t) * 1e3 / a.steps
    print(json.dumps({
        "backbone": a.backbone,
        "params": params,
        "batch": a.batch,
        "threads": torch.get_num_threads(),
        "ms_per_step": ms,
        "images_per_s": a.batch * 1e3 / ms,
        "last_loss": loss,
        "torch": torch.__version__,
    }))


if __name__ == "__main__":
    main()
