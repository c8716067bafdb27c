"""What the issue-7 conveniences cost: automatic token reshape and automatic layer choice.

Run:  PYTHONPATH=src:tests python benchmarks/beyond_overhead.py [--repeats 15] [--device cpu]

Side by side, interleaved in one run, medians over ``--repeats`` rounds, on a
random Hugging Face ViT (4 layers, 224x224 input, patch 16: 197 tokens) and the
tutorial's ConvNet:

- ViT: GradCAM with the automatic token reshape vs a hand-written reshape
  (the grid search runs per call, for activations and gradients);
- first call with ``layers=None`` (a scan forward + backward, then the
  explanation) vs a call with the layer given, for both models.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import camlens
from camlens.demo.models import ConvNet


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=224, patch_size=16, hidden_size=64, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=128, num_labels=10)
    vit = ViTForImageClassification(cfg).eval().to(dev)
    xv = torch.rand(8, 3, 224, 224, device=dev)
    conv = ConvNet().eval().to(dev)
    xc = torch.rand(32, 1, 28, 28, device=dev)
    layer = "vit.layers.3.layernorm_before"

    def hand(t):
        return t[:, 1:].reshape(t.shape[0], 14, 14, -1).permute(0, 3, 1, 2)

    cases = {
        "vit auto reshape": lambda: camlens.GradCAM(vit, layer)(xv),
        "vit hand reshape": lambda: camlens.GradCAM(vit, layer, reshape=hand)(xv),
        "vit layers=None (1st call)": lambda: camlens.GradCAM(vit)(xv),
        "convnet layer given": lambda: camlens.GradCAM(conv, "seq.4")(xc),
        "convnet layers=None (1st call)": lambda: camlens.GradCAM(conv)(xc),
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for k, fn in cases.items():
            times[k].append(timed(fn, dev))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"device {dev}, torch {torch.__version__}, {args.repeats} interleaved rounds, medians")
    for k, v in med.items():
        print(f"{k:<32} {v:9.2f} ms")
    print(f"ratio vit auto/hand reshape       {med['vit auto reshape'] / med['vit hand reshape']:.3f}")
    print(f"ratio vit layers=None/given       {med['vit layers=None (1st call)'] / med['vit auto reshape']:.3f}")
    print(f"ratio convnet layers=None/given   {med['convnet layers=None (1st call)'] / med['convnet layer given']:.3f}")


if __name__ == "__main__":
    main()
