"""What the issue-7 conveniences cost: automatic token reshape and automatic layer choice.

Run:  python benchmarks/beyond_overhead.py [--repeats 15] [--device cpu]

Side by side, interleaved in one run (benchmarks/harness.py), medians over
``--rounds``/``--repeats`` rounds, on a
random Hugging Face ViT (4 layers, 224x224 input, patch 16: 197 tokens) and the
tutorial's ConvNet:

- ViT: GradCAM with the automatic token reshape vs a hand-written reshape
  (the grid search runs per call, for activations and gradients);
- first call with ``layers=None`` (a scan forward + backward, then the
  explanation) vs a call with the layer given, for both models.
"""

from __future__ import annotations

import torch

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
import camlens
from camlens.demo.models import ConvNet


def main() -> None:
    ap = harness.parser(__doc__, rounds=15, rounds_aliases=("--repeats",))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    harness.set_threads(args.threads)
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
    run = harness.SideBySide(cases).run(args.rounds, warmup=1)
    med = {k: v * 1e3 for k, v in run.medians().items()}
    print(f"device {dev}, torch {torch.__version__}, {args.rounds} interleaved rounds, medians")
    for k, v in med.items():
        print(f"{k:<32} {v:9.2f} ms")
    print(f"ratio vit auto/hand reshape       {med['vit auto reshape'] / med['vit hand reshape']:.3f}")
    print(f"ratio vit layers=None/given       {med['vit layers=None (1st call)'] / med['vit auto reshape']:.3f}")
    print(f"ratio convnet layers=None/given   {med['convnet layers=None (1st call)'] / med['convnet layer given']:.3f}")


if __name__ == "__main__":
    main()
