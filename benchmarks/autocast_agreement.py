"""How far maps under torch.autocast stray from float32 maps, and what autocast costs or saves.

Run:  python benchmarks/autocast_agreement.py [--device cuda] [--seeds 5] [--repeats 7]

For each model (the tutorial's ConvNet, a small ViT with registers, a
Swin-like channels-last net, a random Hugging Face ViT) and each seed, the
same images are explained in float32 and under autocast (bfloat16 on CPU;
float16 and bfloat16 on CUDA) for the float32 run's classes; it prints the
largest and the mean absolute difference of the normalized maps (values in
[0, 1]) over all images and seeds, and the median time per call of each
precision, taken interleaved (fp32, autocast, fp32, ...) in the same run by
benchmarks/harness.py (``--rounds``/``--repeats``).
"""

from __future__ import annotations

import statistics

import torch

import harness  # first: puts src/, tests/ and benchmarks/ on sys.path

# isort: split
import camlens
from camlens.demo.models import ConvNet


def models():
    from beyond_models import SwinLike, TinyViT, hf_vit

    yield "convnet", lambda: ConvNet().eval(), "seq.4", (1, 28, 28)
    yield "tinyvit", lambda: TinyViT().eval(), "blocks.0", (3, 32, 32)
    yield "swinlike", lambda: SwinLike().eval(), "stages.1", (3, 32, 32)
    try:
        import transformers  # noqa: F401
    except ImportError:
        return
    yield "hf-vit", hf_vit, "vit.layers.0", (3, 32, 32)


def precisions(cam, x: torch.Tensor, targets, device_type: str, dtype: torch.dtype) -> dict:
    """The two contenders: the call in float32, and the same call under autocast to ``dtype``."""

    def fp32() -> None:
        cam(x, target=targets)

    def amp() -> None:
        with torch.autocast(device_type, dtype=dtype):
            cam(x, target=targets)

    return {"fp32": fp32, "autocast": amp}


def main() -> None:
    ap = harness.parser(__doc__, rounds=7, rounds_aliases=("--repeats",))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    harness.set_threads(args.threads)
    dev = torch.device(args.device)
    dtypes = [torch.bfloat16] if dev.type == "cpu" else [torch.float16, torch.bfloat16]
    print(f"device {dev}, torch {torch.__version__}, {args.seeds} seeds x {args.batch} images")
    print(f"{'model':<10} {'autocast':<9} {'max|d|':>8} {'mean|d|':>8} {'fp32 ms':>8} {'amp ms':>8} {'amp/fp32':>8}")
    for name, make, layer, shape in models():
        for dt in dtypes:
            worst, means = 0.0, []
            m32 = mamp = 0.0
            for seed in range(args.seeds):
                torch.manual_seed(seed)
                model = make().to(dev)
                x = torch.rand(args.batch, *shape, device=dev)
                cam = camlens.GradCAM(model, layer)
                ref = cam(x)
                with torch.autocast(dev.type, dtype=dt):
                    amp = cam(x, target=ref.targets)
                d = (amp.map.float() - ref.map).abs()
                worst = max(worst, float(d.max()))
                means.append(float(d.mean()))
                if seed == 0:
                    run = harness.SideBySide(precisions(cam, x, ref.targets, dev.type, dt)).run(args.rounds)
                    m32, mamp = run.median("fp32") * 1e3, run.median("autocast") * 1e3
            print(
                f"{name:<10} {str(dt).split('.')[-1]:<9} {worst:8.4f} {statistics.mean(means):8.4f} "
                f"{m32:8.2f} {mamp:8.2f} {mamp / m32:8.2f}"
            )


if __name__ == "__main__":
    main()
