"""Time every registered method on the ResNet-style benchmark model, relative to plain Grad-CAM.

Also times Score-CAM and Ablation-CAM against torchcam's ScoreCAM on the same
input (torchcam is installed with --no-deps in the benchmark environment).
Timings are interleaved by benchmarks/harness.py (one call of every contender
per round) and the median over rounds is reported, so load from other
processes hits all alike.

    PYTHONPATH=src python benchmarks/bench_methods.py [--rounds 5] [--batch 16] [--only scorecam,ablationcam]
"""

from __future__ import annotations

import platform
import time
import warnings
from collections.abc import Callable

import torch

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
import camlens
from camlens.core.capture import capture, forward_hooks
from camlens.methods import METHODS
from camlens.methods.scorecam import CPU_MAX_ROWS
from models import resnet_small

LAYER = "layer4"


def contenders(
    model: torch.nn.Module, x: torch.Tensor, classes: list[int], only: set[str] | None, torchcam_batch: int = 0
):
    out: dict[str, Callable[[], object]] = {}
    for name, cls in sorted(METHODS.items()):
        if only and name not in only and name != "gradcam":
            continue
        method = cls(model) if name in ("fullgrad", "guided-backprop") else cls(model, LAYER)
        out[name] = lambda m=method: m(x, target=classes)
    if not only or "scorecam" in only:
        sc = camlens.ScoreCAM(model, LAYER, weighting="channel-softmax")
        out["scorecam[channel-softmax]"] = lambda: sc(x, target=classes)
        plain = camlens.ScoreCAM(model, LAYER, optimize=False)  # what the optimized copy buys
        out["scorecam[optimize=False]"] = lambda: plain(x, target=classes)
    if not only or "ablationcam" in only:
        ab = camlens.AblationCAM(model, LAYER, rerun="full")
        out["ablationcam[rerun=full]"] = lambda: ab(x, target=classes)
    try:
        from torchcam.methods import ScoreCAM as TorchcamScoreCAM
    except ImportError as e:  # the bar needs it: say so loudly
        raise SystemExit(f"torchcam is not installed ({e}); pip install --no-deps torchcam==0.5.0") from None

    def torchcam_scorecam(batch_size: int = 32) -> object:
        extractor = TorchcamScoreCAM(model, LAYER, batch_size=batch_size, input_shape=tuple(x.shape[1:]))
        try:
            with torch.no_grad():
                scores = model(x)
            return extractor(class_idx=classes, scores=scores)
        finally:
            extractor.remove_hooks()

    if not only or {"scorecam", "ablationcam"} & only:
        out["torchcam.ScoreCAM"] = torchcam_scorecam
        if torchcam_batch:
            out[f"torchcam.ScoreCAM[bs={torchcam_batch}]"] = lambda: torchcam_scorecam(torchcam_batch)
    return out


def main() -> None:
    p = harness.parser(__doc__, rounds=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--only", default="", help="comma-separated method names (gradcam is always timed)")
    p.add_argument(
        "--torchcam-batch", type=int, default=0, help="also time torchcam's ScoreCAM with this batch_size (default 32)"
    )
    args = p.parse_args()
    threads = harness.set_threads(args.threads)
    torch.manual_seed(0)
    model = resnet_small(num_classes=100).eval()
    x = torch.randn(args.batch, 3, 64, 64)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    runs = contenders(model, x, classes, only, args.torchcam_batch)
    warnings.simplefilter("ignore")
    run = harness.SideBySide(runs, label="methods", sub_label=f"resnet_small b{args.batch}").run(args.rounds, warmup=1)
    med = run.medians()
    tc = med.get("torchcam.ScoreCAM")
    cpu = platform.processor() or platform.machine()
    print(
        f"# resnet_small, batch {args.batch}, 3x64x64, layer {LAYER}, CPU ({cpu}, "
        f"{threads} threads), torch {torch.__version__}, median of {args.rounds} interleaved rounds"
    )
    harness.print_table(["method", "median s", "min s", "x Grad-CAM", "torchcam/this"], [
        [name, f"{t:.4f}", f"{min(run.per_round(name)):.4f}", f"{run.ratio(name, 'gradcam'):.2f}",
         f"{tc / t:.2f}" if tc and name.startswith(("scorecam", "ablationcam", "torchcam")) else ""]
        for name, t in med.items()
    ])  # fmt: skip
    if not only or "scorecam" in only:
        sc = camlens.ScoreCAM(model, LAYER)
        sc(x, target=classes)
        with capture(model, {LAYER: dict(model.named_modules())[LAYER]}) as cap, torch.no_grad():
            model(x)
        keys = camlens.core.ops.minmax_normalize(cap.activations[LAYER].detach().flatten(2))
        live = keys.amax(-1) > 0
        distinct = sum(len(torch.unique(keys[i][live[i]], dim=0)) for i in range(len(x)))
        print(
            f"# camlens Score-CAM: {distinct} distinct masks of {live.numel()} channels x images "
            f"({int(live.sum())} non-constant); extra passes through the {sc.inference_copy.last_used}, "
            f"{min(sc._rows_per_chunk(x), CPU_MAX_ROWS)} rows each; "
            f"torchcam: {live.numel()} masked passes, 32 rows each"
        )
        # How close to the CPU's arithmetic limit: multiply-adds of one pass against a large SGEMM's rate.
        flop = 2 * pass_macs(model, x[:1])
        a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
        torch.mm(a, b)
        t0 = time.perf_counter()
        for _ in range(5):
            torch.mm(a, b)
        sgemm = 5 * 2 * 2048**3 / (time.perf_counter() - t0)
        for name, passes in (("scorecam", distinct), ("torchcam.ScoreCAM", live.numel())):
            if name in med:
                rate = passes * flop / med[name]
                print(
                    f"# {name}: {passes} passes x {flop / 1e6:.1f} MFLOP in {med[name]:.3f} s (whole call) = "
                    f"{rate / 1e9:.0f} GFLOP/s, {rate / sgemm:.0%} of this CPU's SGEMM rate ({sgemm / 1e9:.0f} GFLOP/s)"
                )


def pass_macs(model: torch.nn.Module, x1: torch.Tensor) -> int:
    """Multiply-adds of the convolutions and linear layers in one forward pass of ``x1``."""
    total = [0]

    def hook(m: torch.nn.Module, args: object, out: torch.Tensor) -> None:
        if isinstance(m, torch.nn.Conv2d):
            total[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, torch.nn.Linear):
            total[0] += out.numel() * m.in_features

    with forward_hooks((m, hook) for m in model.modules()), torch.no_grad():
        model(x1)
    return total[0]


if __name__ == "__main__":
    main()
