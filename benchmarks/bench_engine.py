"""Grad-CAM engine benchmark: the floor vs camlens vs Captum, interleaved in one process.

    make bench B=engine                     # CPU: ConvNet and ResNet-style, batch 1 and 64
    python benchmarks/bench_engine.py --device cuda --resnet50   # GPU: ResNet-50, 224x224, batch 64

(a) floor: a bare forward pass with the layer's output taken inline (no hooks)
    plus torch.autograd.grad of the summed target score to that output;
(b) camlens: GradCAM(model, layer)(x): hooks, gradients, weights, ReLU,
    bilinear upsampling to the input size, min-max normalization;
(c) captum: LayerGradCam(...).attribute + LayerAttribution.interpolate + the
    same normalization, i.e. the same output as (b).
Plus top-5 classes per image: camlens top_k=5 vs one class vs a loop of 5 calls.
Reported: medians over interleaved repetitions, ratios camlens/floor and
captum/camlens, and peak memory (CUDA: max_memory_allocated; CPU: peak RSS
of a fresh subprocess running only that variant, minus one running nothing).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import camlens  # noqa: E402
from camlens.demo.models import ConvNet  # noqa: E402
from camlens.core.ops import minmax_normalize  # noqa: E402
from models import resnet50, resnet_small  # noqa: E402


def make(model_name: str, batch: int, device: str):
    torch.manual_seed(0)
    if model_name == "convnet":
        model, x, layer = ConvNet(), torch.rand(batch, 1, 28, 28), "seq.4"

        def split(x):
            a = model.seq[:5](x)
            return a, lambda a: model.seq[5:](a)
    else:
        model = resnet_small() if model_name == "resnet-small" else resnet50()
        size = 64 if model_name == "resnet-small" else 224
        x, layer = torch.rand(batch, 3, size, size), "layer4"

        def split(x):
            m = model
            h = m.layer3(m.layer2(m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))))
            a = m.layer4(h)
            return a, lambda a: m.fc(torch.flatten(m.avgpool(a), 1))

    model = model.to(device).eval()
    return model, x.to(device), layer, split


def variants(model, x, layer, split):
    cam = camlens.GradCAM(model, layers=layer)
    module = dict(model.named_modules())[layer]

    def floor():
        a, head = split(x)
        out = head(a)
        score = out.gather(1, out.argmax(1, keepdim=True)).sum()
        return torch.autograd.grad(score, a)[0]

    def ours():
        return cam(x).maps[layer]

    def captum():
        from captum.attr import LayerAttribution, LayerGradCam

        with torch.no_grad():
            target = model(x).argmax(1)
        attr = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
        return minmax_normalize(LayerAttribution.interpolate(attr, tuple(x.shape[2:]), interpolate_mode="bilinear"))

    def top1():
        return cam(x, target=0).maps[layer]

    def top5():
        return cam(x, top_k=5).maps[layer]

    def loop5():
        return [cam(x, target=c).maps[layer] for c in range(5)]

    return {"floor": floor, "camlens": ours, "captum": captum, "camlens-1class": top1, "camlens-top5": top5,
            "camlens-loop5": loop5}  # fmt: skip


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(fns: dict, reps: int, device: str) -> dict[str, float]:
    for f in fns.values():  # warm-up
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            sync(device)
            t = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_cpu(model_name: str, batch: int, variant: str) -> float:
    """Peak RSS (MiB) of a fresh process running ``variant`` (or nothing) three times."""
    code = (
        f"import sys; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_engine as b, resource;"
        f"m,x,l,s=b.make({model_name!r},{batch},'cpu'); fns=b.variants(m,x,l,s);"
        f"[fns[{variant!r}]() for _ in range(3)] if {variant!r} != 'none' else None;"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def peak_cuda(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--resnet50", action="store_true", help="ResNet-50 at 224x224, batch 64 (for a GPU)")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args()
    configs = [("resnet50", 64)] if args.resnet50 else [("convnet", 1), ("convnet", 64), ("resnet-small", 1),
                                                        ("resnet-small", 64)]  # fmt: skip
    hw = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or 'cpu'}, {torch.get_num_threads()} threads"
    print(f"# camlens {camlens.__version__}, torch {torch.__version__}, device {args.device} ({hw}), reps {args.reps}")
    header = "| model | batch | floor ms | camlens ms | captum ms | camlens/floor | captum/camlens | top-5/1-class | loop-5/1-class | peak MiB floor / camlens / captum |"
    print(header)
    print("| --- " * 10 + "|")
    for name, batch in configs:
        model, x, layer, split = make(name, batch, args.device)
        fns = variants(model, x, layer, split)
        reps = args.reps if not (name == "resnet-small" and batch == 64) else max(5, args.reps // 2)
        med = time_interleaved(fns, reps, args.device)
        if args.no_memory:
            mem = "-"
        elif args.device.startswith("cuda"):
            mem = " / ".join(f"{peak_cuda(fns[k]):.0f}" for k in ("floor", "camlens", "captum"))
        else:
            base = peak_cpu(name, batch, "none")
            mem = " / ".join(f"{peak_cpu(name, batch, k) - base:.0f}" for k in ("floor", "camlens", "captum"))
        ms = {k: v * 1e3 for k, v in med.items()}
        print(
            f"| {name} | {batch} | {ms['floor']:.2f} | {ms['camlens']:.2f} | {ms['captum']:.2f} | "
            f"{med['camlens'] / med['floor']:.2f} | {med['captum'] / med['camlens']:.2f} | "
            f"{med['camlens-top5'] / med['camlens-1class']:.2f} | {med['camlens-loop5'] / med['camlens-1class']:.2f} | {mem} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
