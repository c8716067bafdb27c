"""Time every registered method on the ResNet-style benchmark model, relative to plain Grad-CAM, and the
perturbation methods against their peers' implementations on the same input.

Peers, side by side on the same model, input and classes: torchcam 0.5's ScoreCAM, SSCAM and ISCAM
(installed with --no-deps in the benchmark environment) and pytorch-grad-cam's ScoreCAM and AblationCAM.
SS-CAM and IS-CAM run ``--samples`` noise samples / integration steps on both sides (the peers' defaults,
35 and 10, make a call tens of seconds on 2 cores). Timings are interleaved by benchmarks/harness.py (one
call of every contender per round) and the median over rounds is reported, so load from other processes
hits all alike. The last column is the peer's median over camlens' for each perturbation method (the
issue's bar: at least 2).

Every contender runs in this one process after ``camlens.keep_freed_memory()`` (what the ``camlens`` command does
at start: glibc keeps freed memory for reuse, see benchmarks/bench_allocator.py), so camlens and the peers run
under the same allocator; ``--default-allocator`` leaves glibc's defaults for all of them.

    PYTHONPATH=src python benchmarks/bench_methods.py [--rounds 5] [--batch 16] [--samples 4]
        [--only scorecam,sscam,iscam,ablationcam] [--peers torchcam,grad-cam] [--default-allocator]
        [--model resnet18 --size 224]   (photo scale: ResNet-18 at 224, ``layer4`` 7x7)

``--peers torchcam`` times torchcam alone: pytorch-grad-cam imports torchvision, which on this machine imports
only beside the CUDA build of torch 2.14.1 (the test environment), so on a CPU build of torch (the demo
environment) only torchcam can run.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from collections.abc import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars (read when tqdm is imported)

import torch

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
import camlens
from camlens.core.capture import capture, forward_hooks
from camlens.methods import METHODS
from camlens.methods.scorecam import side_by_side
from models import resnet18, resnet_small

LAYER = "layer4"

#: the benchmark models: the issue's ResNet-style model at 64x64, and ResNet-18 for photo-sized inputs.
MODELS: dict[str, Callable[[], torch.nn.Module]] = {"resnet_small": lambda: resnet_small(num_classes=100),
                                                     "resnet18": resnet18}  # fmt: skip

#: camlens' perturbation methods -> the peers' implementations timed against them.
PEERS = {
    "scorecam": ("torchcam.ScoreCAM", "grad-cam.ScoreCAM"),
    "sscam": ("torchcam.SSCAM",),
    "iscam": ("torchcam.ISCAM",),
    "ablationcam": ("grad-cam.AblationCAM",),
}

#: the peer libraries, as the contenders' names start (``--peers``).
PEER_LIBRARIES = ("torchcam", "grad-cam")


def contenders(
    model: torch.nn.Module,
    x: torch.Tensor,
    classes: list[int],
    only: set[str] | None,
    torchcam_batch: int = 0,
    samples: int = 4,
    peers: frozenset[str] = frozenset(PEER_LIBRARIES),
):
    out: dict[str, Callable[[], object]] = {}
    for name, cls in sorted(METHODS.items()):
        if only and name not in only and name != "gradcam":
            continue
        kwargs = {"n_samples": samples} if name in ("sscam", "iscam") else {}
        method = cls(model) if name in ("fullgrad", "guided-backprop") else cls(model, LAYER, **kwargs)
        out[name] = lambda m=method: m(x, target=classes)
    if not only or "scorecam" in only:
        sc = camlens.ScoreCAM(model, LAYER, weighting="channel-softmax")
        out["scorecam[channel-softmax]"] = lambda: sc(x, target=classes)
        plain = camlens.ScoreCAM(model, LAYER, optimize=False)  # what the optimized copy buys
        out["scorecam[optimize=False]"] = lambda: plain(x, target=classes)
    if not only or "ablationcam" in only:
        ab = camlens.AblationCAM(model, LAYER, rerun="full")
        out["ablationcam[rerun=full]"] = lambda: ab(x, target=classes)
    if peers:
        out.update(peer_contenders(model, x, classes, only, torchcam_batch, samples, peers))
    return out


def peer_contenders(
    model: torch.nn.Module,
    x: torch.Tensor,
    classes: list[int],
    only: set[str] | None,
    torchcam_batch: int,
    samples: int,
    libraries: frozenset[str] = frozenset(PEER_LIBRARIES),
) -> dict[str, Callable[[], object]]:
    """The peers' implementations of the perturbation methods asked for (all of them when ``only`` is None),
    from the peer ``libraries`` named."""
    wanted = {
        peer
        for ours, peers in PEERS.items()
        if not only or ours in only
        for peer in peers
        if peer.split(".")[0] in libraries
    }
    every: dict[str, Callable[[], object]] = {}
    if any(peer.startswith("torchcam.") for peer in wanted):
        every.update(torchcam_contenders(model, x, classes, samples, torchcam_batch))
    if any(peer.startswith("grad-cam.") for peer in wanted):
        every.update(grad_cam_contenders(model, x, classes))
    if "torchcam.ScoreCAM" in wanted:  # the --torchcam-batch variant goes with torchcam's ScoreCAM
        wanted |= {name for name in every if name.startswith("torchcam.ScoreCAM[")}
    return {name: fn for name, fn in every.items() if name in wanted}


def _missing(e: ImportError) -> SystemExit:
    """The bar needs the peers: say so loudly."""
    return SystemExit(f"a peer is not installed ({e}); pip install --no-deps torchcam==0.5.0 grad-cam==1.5.7")


def torchcam_contenders(
    model: torch.nn.Module, x: torch.Tensor, classes: list[int], samples: int, torchcam_batch: int
) -> dict[str, Callable[[], object]]:
    try:
        from torchcam.methods import ISCAM as TorchcamISCAM
        from torchcam.methods import SSCAM as TorchcamSSCAM
        from torchcam.methods import ScoreCAM as TorchcamScoreCAM
    except ImportError as e:
        raise _missing(e) from None

    def torchcam(cls: type, **kw: object) -> Callable[[], object]:
        def run() -> object:
            extractor = cls(model, LAYER, input_shape=tuple(x.shape[1:]), **kw)
            try:
                with torch.no_grad():
                    scores = model(x)
                return extractor(class_idx=classes, scores=scores)
            finally:
                extractor.remove_hooks()

        return run

    out = {
        "torchcam.ScoreCAM": torchcam(TorchcamScoreCAM, batch_size=32),
        "torchcam.SSCAM": torchcam(TorchcamSSCAM, batch_size=32, num_samples=samples),
        "torchcam.ISCAM": torchcam(TorchcamISCAM, batch_size=32, num_samples=samples),
    }
    if torchcam_batch:
        out[f"torchcam.ScoreCAM[bs={torchcam_batch}]"] = torchcam(TorchcamScoreCAM, batch_size=torchcam_batch)
    return out


def grad_cam_contenders(model: torch.nn.Module, x: torch.Tensor, classes: list[int]) -> dict[str, Callable[[], object]]:
    try:
        from pytorch_grad_cam import AblationCAM as GcAblationCAM
        from pytorch_grad_cam import ScoreCAM as GcScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as e:
        raise _missing(e) from None
    module = dict(model.named_modules())[LAYER]
    targets = [ClassifierOutputTarget(c) for c in classes]

    def grad_cam(cls: type) -> Callable[[], object]:
        def run() -> object:
            return cls(model, [module])(x, targets=targets)

        return run

    return {"grad-cam.ScoreCAM": grad_cam(GcScoreCAM), "grad-cam.AblationCAM": grad_cam(GcAblationCAM)}


def peer_ratios(med: dict[str, float]) -> dict[str, str]:
    """For each of camlens' perturbation methods: "peer x.xx" per peer (the peer's median / camlens')."""
    return {
        ours: ", ".join(f"{peer} {med[peer] / med[ours]:.2f}" for peer in peers if peer in med)
        for ours, peers in PEERS.items()
        if ours in med
    }


def main() -> None:
    p = harness.parser(__doc__, rounds=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--model", choices=sorted(MODELS), default="resnet_small",
                   help="resnet_small (the issue's input, 3x64x64) or resnet18 (photo scale: --size 224)")  # fmt: skip
    p.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    p.add_argument("--samples", type=int, default=4, help="SS-CAM noise samples / IS-CAM steps, on both sides")
    p.add_argument("--only", default="", help="comma-separated method names (gradcam is always timed)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls of each contender first (default 1)")
    p.add_argument("--no-peers", action="store_true", help="time camlens' methods only")
    p.add_argument(
        "--peers", default=",".join(PEER_LIBRARIES), help="comma-separated peer libraries (default: torchcam,grad-cam)"
    )
    p.add_argument(
        "--torchcam-batch", type=int, default=0, help="also time torchcam's ScoreCAM with this batch_size (default 32)"
    )
    p.add_argument("--default-allocator", action="store_true", help="leave glibc's malloc settings (all contenders)")
    args = p.parse_args()
    kept = False if args.default_allocator else camlens.keep_freed_memory()
    threads = harness.set_threads(args.threads)
    torch.manual_seed(0)
    model = MODELS[args.model]().eval()
    x = torch.randn(args.batch, 3, args.size, args.size)
    with torch.no_grad():
        classes = model(x).argmax(1).tolist()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    libraries = frozenset(s.strip() for s in args.peers.split(",") if s.strip())
    if not libraries <= set(PEER_LIBRARIES):
        p.error(f"--peers {args.peers!r}: the peer libraries are {', '.join(PEER_LIBRARIES)}")
    runs = contenders(
        model, x, classes, only, args.torchcam_batch, args.samples, frozenset() if args.no_peers else libraries
    )
    warnings.simplefilter("ignore")
    # One call per contender and round ("once"): the peers' calls take seconds; the order flips every round.
    sub = f"{args.model} b{args.batch}"
    bench = harness.SideBySide(
        runs, mode="once", alternate=True, label="methods", sub_label=sub,
        after_each=lambda r, name, t: print(f"# round {r}: {name} {t:.3f} s", flush=True),
    )  # fmt: skip
    run = bench.run(args.rounds, warmup=args.warmup)
    med = run.medians()
    ratios = peer_ratios(med)
    cpu = platform.processor() or platform.machine()
    print(
        f"# {args.model}, batch {args.batch}, 3x{args.size}x{args.size}, layer {LAYER}, CPU ({cpu}, "
        f"{threads} threads), torch {torch.__version__}, SS-CAM/IS-CAM {args.samples} samples, "
        f"median of {args.rounds} interleaved rounds, freed memory {'kept' if kept else 'returned (glibc defaults)'}"
    )
    harness.print_table(["method", "median s", "min s", "x Grad-CAM", "peer / this"], [
        [name, f"{t:.4f}", f"{min(run.per_round(name)):.4f}", f"{run.ratio(name, 'gradcam'):.2f}",
         ratios.get(name, "")]
        for name, t in med.items()
    ])  # fmt: skip
    tc = med.get("torchcam.ScoreCAM")
    if tc and "scorecam" in med:
        scorecam_report(model, x, classes, med)


def scorecam_report(model: torch.nn.Module, x: torch.Tensor, classes: list[int], med: dict[str, float]) -> None:
    """Score-CAM's distinct masks and arithmetic rate against torchcam's, and this CPU's SGEMM rate."""
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
        "{} rows each, {} at once; ".format(*side_by_side(sc._rows_per_chunk(x), distinct, None)) +
        f"torchcam: {live.numel()} masked passes, 32 rows each"
    )
    # How close to the CPU's arithmetic limit: multiply-adds of one pass against a large SGEMM's rate.
    # The count is the model's, convolution by convolution; camlens' copy runs layer4's 3x3 convolutions
    # on their 2x2 maps as matrix products that skip the padding taps, so its effective rate is lower.
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
                f"# {name}: {passes} passes x {flop / 1e6:.1f} MFLOP (as convolutions) in {med[name]:.3f} s "
                f"(whole call) = "
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
