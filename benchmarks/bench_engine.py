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
Reported (through benchmarks/harness.py): medians over interleaved rounds,
ratios camlens/floor and captum/camlens, and peak memory (CUDA:
max_memory_allocated; CPU: peak RSS of a fresh subprocess running only that
variant, minus one running nothing).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import torch

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
import camlens
from camlens.core.ops import minmax_normalize
from camlens.demo.models import ConvNet
from models import resnet50, resnet_small


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


def peak_cpu(model_name: str, batch: int, variant: str) -> float:
    """Peak RSS (MiB) of a fresh process running ``variant`` (or nothing) three times."""
    code = (
        f"import sys; sys.argv=['x']; sys.path.insert(0, {str(Path(__file__).parent)!r});"
        "import bench_engine as b, resource;"
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
    p = harness.parser(__doc__, rounds=15, rounds_aliases=("--reps",))
    p.add_argument("--device", default="cpu")
    p.add_argument("--resnet50", action="store_true", help="ResNet-50 at 224x224, batch 64 (for a GPU)")
    p.add_argument("--no-memory", action="store_true")
    args = p.parse_args()
    threads = harness.set_threads(args.threads)
    configs = [("resnet50", 64)] if args.resnet50 else [("convnet", 1), ("convnet", 64), ("resnet-small", 1),
                                                        ("resnet-small", 64)]  # fmt: skip
    cuda = args.device.startswith("cuda")
    hw = torch.cuda.get_device_name() if cuda else f"{platform.processor() or 'cpu'}, {threads} threads"
    print(f"# camlens {camlens.__version__}, torch {torch.__version__}, device {args.device} ({hw}), "
          f"rounds {args.rounds}")  # fmt: skip
    header = ["model", "batch", "floor ms", "camlens ms", "captum ms", "camlens/floor", "captum/camlens",
              "top-5/1-class", "loop-5/1-class", "peak MiB floor / camlens / captum"]  # fmt: skip
    harness.print_table(header, [])
    for name, batch in configs:
        model, x, layer, split = make(name, batch, args.device)
        fns = variants(model, x, layer, split)
        rounds = args.rounds if not (name == "resnet-small" and batch == 64) else max(5, args.rounds // 2)
        run = harness.SideBySide(fns, label="Grad-CAM engine", sub_label=f"{name} b{batch}").run(rounds, warmup=2)
        if args.no_memory:
            mem = "-"
        elif cuda:
            mem = " / ".join(f"{peak_cuda(fns[k]):.0f}" for k in ("floor", "camlens", "captum"))
        else:
            base = peak_cpu(name, batch, "none")
            mem = " / ".join(f"{peak_cpu(name, batch, k) - base:.0f}" for k in ("floor", "camlens", "captum"))
        ms = {k: v * 1e3 for k, v in run.medians().items()}
        harness.print_row([name, batch, f"{ms['floor']:.2f}", f"{ms['camlens']:.2f}", f"{ms['captum']:.2f}",
                           f"{run.ratio('camlens', 'floor'):.2f}", f"{run.ratio('captum', 'camlens'):.2f}",
                           f"{run.ratio('camlens-top5', 'camlens-1class'):.2f}",
                           f"{run.ratio('camlens-loop5', 'camlens-1class'):.2f}", mem])  # fmt: skip


if __name__ == "__main__":
    main()
