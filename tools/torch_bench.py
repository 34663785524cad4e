#!/usr/bin/env python3
"""tools/torch_bench.py - the PyTorch side of `make bench` (tools/bench.sh).

The networks are those of models/builders.c, layer for layer, with the same parameter names and
initialisation, so `nnc bench` and this script time the same arithmetic:

  resnet8/20/32/44/56/110  CIFAR ResNet (6n+2 layers): conv3x3(in->16, no bias) BN ReLU; three
                           stages of n basic blocks at 16/32/64 channels (stride 2 in the first
                           block of stages 2 and 3), block = conv3x3-BN-ReLU-conv3x3-BN + shortcut,
                           then ReLU; the shortcut is the identity, or where the shape changes the
                           input subsampled at the stride with zero channels padded equally on both
                           sides ("option A": no parameters); global average pool; linear + bias.
                           Kaiming-normal (fan-in, gain sqrt 2) conv and linear weights.
  vgg11/13/16/19           VGG with batch norm: conv3x3 (bias) BN ReLU, 2x2 max-pool at each "M";
                           classifier Dropout Linear(512,512) ReLU Dropout Linear(512,512) ReLU
                           Linear(512,classes); PyTorch's default initialisation. A pool whose input
                           is already 1x1 is left out, and features larger than 1x1 at the end get a
                           global average pool (both only for image sizes other than 32).
  tiny, tiny-nobn          conv3x3(in->8) [BN] ReLU maxpool2 linear, the test models.

A training step is forward, mean softmax cross-entropy, backward and SGD (lr 0.01, momentum 0.9,
weight decay 5e-4) on one random batch with random labels, as `nnc bench`; inference is the
eval-mode forward under torch.inference_mode(). Warm-up steps are not timed; each of --runs
timed runs does --iters steps, and the median images/s over the runs is reported.

Commands (every one prints JSON lines on stdout, human-readable lines on stderr):
  bench  --models resnet20,vgg16 --threads 1,2 [--modes train,infer] [--batch 128] [--runs 5]
         [--warmup 2] [--iters 1] [--channels-last] [--bf16]
         one line per (model, mode, threads): {"model", "mode", "threads", "batch",
         "images_per_sec", "runs", "format", "dtype", "torch"}
  train  --model resnet20 [--threads 1] [--iters 2] [--batch 128]
         a few training steps and the process's peak RSS ({"peak_rss_mib": ...}), for memory
  info   --model resnet20   parameter count and tensor names/shapes (compare with `nnc info`)
Common: --image-size 32 --in-channels 3 --classes 10 --seed 1.
--channels-last stores activations and weights NHWC (PyTorch's fastest CPU layout for these
networks with oneDNN); --bf16 runs forward and loss under torch.autocast("cpu", bfloat16).

Exit status: 0 ok, 2 bad arguments, 3 PyTorch is not installed (message on stderr).
"""
import argparse
import json
import resource
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    torch = None

RESNET_BLOCKS = {"resnet8": 1, "resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
MODELS = sorted(RESNET_BLOCKS) + sorted(VGG_CFGS) + ["tiny", "tiny-nobn"]


def define_models():
    """The model classes (defined only once torch imported)."""

    def kaiming(m):
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)  # fan_in, gain sqrt(2)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.pad = stride, (cout - cin) // 2
            self.changes = stride != 1 or cin != cout

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            sc = x
            if self.changes:
                sc = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad, self.pad))
            return F.relu(out + sc)

    class ResNet(nn.Module):
        def __init__(self, n, cin, classes):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            blocks, c = [], 16
            for s, width in enumerate((16, 32, 64)):
                for i in range(n):
                    blocks.append(Block(c, width, 2 if s > 0 and i == 0 else 1))
                    c = width
            self.layers = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, classes)
            self.apply(kaiming)

        def forward(self, x):
            x = self.layers(F.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class VGG(nn.Module):
        def __init__(self, cfg, cin, size, classes):
            super().__init__()
            layers, c, s = [], cin, size
            for v in cfg:
                if v == "M":
                    # keeps the index in `features` even when the pool is left out (parameter names)
                    layers.append(nn.MaxPool2d(2, 2) if s > 1 else nn.Identity())
                    s = s // 2 if s > 1 else s
                else:
                    layers += [nn.Conv2d(c, v, 3, 1, 1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                    c = v
            self.features = nn.Sequential(*layers)
            self.gap = s > 1
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, classes))

        def forward(self, x):
            x = self.features(x)
            if self.gap:
                x = F.adaptive_avg_pool2d(x, 1)
            return self.classifier(torch.flatten(x, 1))

    class Tiny(nn.Module):
        def __init__(self, cin, size, classes, bn):
            super().__init__()
            self.conv = nn.Conv2d(cin, 8, 3, 1, 1, bias=not bn)
            self.bn = nn.BatchNorm2d(8) if bn else nn.Identity()
            self.fc = nn.Linear(8 * (size // 2) ** 2, classes)
            self.apply(kaiming)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2, 2)
            return self.fc(torch.flatten(x, 1))

    def build(name, cin, size, classes):
        if name in RESNET_BLOCKS:
            return ResNet(RESNET_BLOCKS[name], cin, classes)
        if name in VGG_CFGS:
            return VGG(VGG_CFGS[name], cin, size, classes)
        return Tiny(cin, size, classes, bn=name == "tiny")

    return build


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Setup:
    """One model, its optimizer and a random batch, in the requested layout and precision."""

    def __init__(self, build, a, name, batch):
        torch.manual_seed(a.seed)
        self.model = build(name, a.in_channels, a.image_size, a.classes)
        self.x = torch.randn(batch, a.in_channels, a.image_size, a.image_size)
        self.y = torch.randint(0, a.classes, (batch,))
        if a.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        self.bf16 = a.bf16

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16)

    def train_step(self):
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()

    def infer_step(self):
        with torch.inference_mode(), self.autocast():
            self.model(self.x)


def measure(s, mode, batch, warmup, runs, iters):
    """Median images/s over runs of iters steps, after warmup untimed steps; and every run's."""
    if mode == "train":
        s.model.train()
        step = s.train_step
    else:
        s.model.eval()
        step = s.infer_step
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates), rates


def int_list(text):
    try:
        v = [int(t) for t in text.split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, found '{text}'")
    if not v or min(v) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, found '{text}'")
    return v


def name_list(allowed):
    def parse(text):
        v = [t for t in text.split(",") if t]
        bad = [t for t in v if t not in allowed]
        if bad or not v:
            raise argparse.ArgumentTypeError(f"unknown '{','.join(bad) or text}' (one of: {', '.join(allowed)})")
        return v
    return parse


def main():
    p = argparse.ArgumentParser(description="PyTorch throughput of nnc's models (the other side of make bench)")
    sub = p.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--image-size", type=int, default=32)
    common.add_argument("--in-channels", type=int, default=3)
    common.add_argument("--classes", type=int, default=10)
    common.add_argument("--seed", type=int, default=1)
    common.add_argument("--batch", type=int, default=128)
    common.add_argument("--channels-last", action="store_true", help="NHWC activations and weights")
    common.add_argument("--bf16", action="store_true", help="forward and loss under bfloat16 autocast")
    b = sub.add_parser("bench", parents=[common], help="images/s of training and inference")
    b.add_argument("--models", type=name_list(MODELS), default=["resnet20", "vgg16"])
    b.add_argument("--modes", type=name_list(["train", "infer"]), default=["train", "infer"])
    b.add_argument("--threads", type=int_list, default=[1, 2])
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--iters", type=int, default=1)
    t = sub.add_parser("train", parents=[common], help="a few training steps, then the peak RSS")
    t.add_argument("--model", choices=MODELS, default="resnet20")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--iters", type=int, default=2)
    i = sub.add_parser("info", parents=[common], help="parameter count and tensor shapes")
    i.add_argument("--model", choices=MODELS, default="resnet20")
    a = p.parse_args()
    if a.batch < 1 or a.image_size < 2 or a.in_channels < 1 or a.classes < 1:
        p.error("--batch, --image-size, --in-channels and --classes must be positive (image size >= 2)")
    if a.cmd == "bench" and (a.runs < 1 or a.iters < 1 or a.warmup < 0):
        p.error("--runs and --iters must be >= 1, --warmup >= 0")
    if torch is None:
        log("torch_bench: PyTorch is not installed for this python3 (import torch failed); "
            "install it with `apt-get install python3-torch` or `pip install torch`")
        return 3
    build = define_models()
    fmt = "channels_last" if a.channels_last else "nchw"
    dtype = "bf16" if a.bf16 else "fp32"

    if a.cmd == "info":
        m = build(a.model, a.in_channels, a.image_size, a.classes)
        for n, v in m.state_dict().items():
            log(f"{n:40s} {tuple(v.shape)}")
        count = sum(v.numel() for v in m.parameters())
        log(f"parameters: {count}")
        print(json.dumps({"model": a.model, "parameters": count}))
        return 0

    if a.cmd == "train":
        torch.set_num_threads(a.threads)
        s = Setup(build, a, a.model, a.batch)
        s.model.train()
        for _ in range(a.iters):
            s.train_step()
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"model": a.model, "threads": a.threads, "batch": a.batch, "steps": a.iters,
                          "format": fmt, "dtype": dtype, "peak_rss_mib": round(rss, 1)}))
        return 0

    for name in a.models:
        s = Setup(build, a, name, a.batch)
        for mode in a.modes:
            for th in a.threads:
                torch.set_num_threads(th)
                med, rates = measure(s, mode, a.batch, a.warmup, a.runs, a.iters)
                log(f"{name:9s} {mode:5s} {th}T: median {med:8.1f} img/s over {a.runs} runs ({fmt}, {dtype})")
                print(json.dumps({"model": name, "mode": mode, "threads": th, "batch": a.batch,
                                  "images_per_sec": round(med, 2), "runs": [round(r, 2) for r in rates],
                                  "format": fmt, "dtype": dtype, "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
