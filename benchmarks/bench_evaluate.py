"""Time `camlens evaluate` on the demo ConvNet and report the issue's bars.

Trains the tutorial ConvNet on the bundled Fashion-MNIST sample (a plain loop:
Adam 1e-3, batch 128, 5 epochs) unless the checkpoint exists, then evaluates
N test images x methods x layers x seeds and prints the table, the timings and
the bar figures (Grad-CAM@seq.4 vs the random map; Spearman after randomizing
the final linear layer).

    PYTHONPATH=src python benchmarks/bench_evaluate.py --threads 2
    PYTHONPATH=src python benchmarks/bench_evaluate.py --seeds 0 --n-images 500   # the timing bar, one seed
    PYTHONPATH=src python benchmarks/bench_evaluate.py --compare 3 --n-images 100  # metric phase before/after
    PYTHONPATH=src python benchmarks/bench_evaluate.py --photos   # issue 12's bar: ResNet-18, 8 photos at 224x224

``--photos`` evaluates a ResNet-18 (torchvision, random weights) on 8 RGB
224x224 photos (scikit-image's sample images), Grad-CAM and HiResCAM at
``layer4``, one seed, the default metrics and sanity checks, and in the same
run times the floor: the forward passes the faithfulness metrics make (counted
from the same plans, timed as batches of the runner's size) and the
forward+backward passes of the sanity checks (one explainer call per
randomization step, timed on the unmodified model). It prints evaluate's wall
time over the floor and the peak resident memory (``resource.getrusage``).

The before/after comparison runs through benchmarks/harness.py: interleaved,
order alternating, each phase timed once per round.

If fewer than three methods are registered, the run is padded with copies of
Grad-CAM registered under "timing-copy-N" in this process only, so the timing
covers 3 methods x 3 layers of the same per-map cost; the output says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
from camlens.cli.evaluate import evaluate_spec
from camlens.demo.checkpoint import save_checkpoint
from camlens.demo.data import CLASSES, FashionMNIST
from camlens.demo.models import ConvNet
from camlens.methods import METHODS, GradCAM, register
from camlens.metrics import ROAD_PERCENTAGES, confidence_change, deletion, insertion, saliency_rank
from camlens.metrics._common import class_probs, resolve_classes
from camlens.metrics.batched import faithfulness
from camlens.metrics.road import road_counts, road_images, road_noise


def train(path: Path, seed: int, epochs: int = 5) -> float:
    torch.manual_seed(seed)
    model = ConvNet()
    x, y = FashionMNIST(split="train").tensors()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    xt, yt = FashionMNIST(split="test").tensors()
    with torch.no_grad():
        acc = float((torch.cat([model(c).argmax(1) for c in xt.split(512)]) == yt).float().mean())
    meta = {"architecture": "convnet", "classes": list(CLASSES), "epochs": epochs, "accuracy": acc, "seed": seed}
    save_checkpoint(path, model, meta)
    print(f"trained {path} in {time.perf_counter() - t0:.1f} s: test accuracy {acc:.4f}")
    return acc


def _before(model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], seed: int, steps: int) -> None:
    """The metric phase as it was before the batched driver: each metric per map, ROAD in float64 at tol 1e-7."""
    for mp in maps.values():
        deletion(model, x, mp, steps=steps, seed=seed)
        insertion(model, x, mp, steps=steps, seed=seed)
        classes = resolve_classes(model, x, None)
        rank = saliency_rank(mp, seed).view(x.shape[0], 28, 28)
        counts = road_counts(ROAD_PERCENTAGES, 784)
        eps = road_noise(x.shape[0], 9, 1, 28, 28, seed)
        for i in range(0, x.shape[0], 28):  # the old chunking: 512 // 18 images
            xs = x[i : i + 28].double()  # the old solver ran in float64 at tol 1e-7
            filled = road_images(xs, rank[i : i + 28], counts, 0.01, eps[i : i + 28].double()).float()
            class_probs(model, filled, classes[i : i + 28].repeat_interleave(18))
        confidence_change(model, x, mp)


def _after(model: nn.Module, x: torch.Tensor, maps: dict[str, torch.Tensor], seed: int, steps: int) -> None:
    faithfulness(model, x, maps, seed=seed, steps=steps)


def compare(ckpt: Path, n_images: int, reps: int, steps: int) -> None:
    """Metric phase before vs after, interleaved, on the same images and the 12 maps of the bar run."""
    from camlens.demo.checkpoint import load_checkpoint
    from camlens.evaluation.run import _method_maps
    from camlens.metrics import BASELINES

    model, _ = load_checkpoint(ckpt)
    x = FashionMNIST(split="test").tensors()[0][:n_images]
    maps: dict[str, torch.Tensor] = {}
    for m in ("gradcam", "gradcam++", "guided-backprop"):
        for key, mp in _method_maps(model, x, m, ["seq.0", "seq.2", "seq.4"], 512).items():
            maps[f"{m}@{key}"] = mp
    maps.update({b: BASELINES[b](x, 0) for b in ("random", "intensity", "edge")})
    phases = {"before": lambda: _before(model, x, maps, 0, steps), "after": lambda: _after(model, x, maps, 0, steps)}
    def report(r: int, name: str, seconds: float) -> None:
        print(f"  rep {r} {name}: {seconds:.2f} s", flush=True)

    run = harness.SideBySide(phases, mode="once", alternate=True, after_each=report).run(reps)
    med = run.medians()
    print(f"metric phase, {n_images} images x {len(maps)} maps, {torch.get_num_threads()} threads, median of {reps}: "
          f"before {med['before']:.2f} s, after {med['after']:.2f} s, speed-up {med['before'] / med['after']:.2f}x")


def _photos(n: int = 8, size: int = 224) -> torch.Tensor:
    """``n`` RGB photos from scikit-image, resized to ``size`` x ``size``, ImageNet-normalized."""
    import skimage.data as sk
    import torch.nn.functional as F

    names = ["astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "retina", "colorwheel"]
    out = []
    for name in (names * n)[:n]:
        img = torch.from_numpy(getattr(sk, name)()[..., :3].copy()).permute(2, 0, 1).float()[None] / 255
        out.append(F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    x = torch.cat(out)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def _forward_floor(model: nn.Module, x: torch.Tensor, count: int, batch: int) -> tuple[float, float]:
    """Seconds for ``count`` forward passes timed on 2 full batches, the faster of the two ways the runner has.

    Channels-last (the runner's copy where the optimized one is not eligible) and the inference-optimized
    copy (BatchNorm folded, pre-packed oneDNN convolutions: what the runner uses where it is eligible).
    """
    from camlens.methods._rerun import InferenceCopy

    cl = __import__("copy").deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = model(x[:2])
    fast = InferenceCopy(None).module(model, x[:2], logits)
    imgs = x.repeat((batch + len(x) - 1) // len(x), 1, 1, 1)[:batch]
    per_image = float("inf")
    for net, feed in ((cl, imgs.contiguous(memory_format=torch.channels_last)), (fast, imgs.contiguous())):
        with torch.inference_mode():
            net(feed[:2])
            for _ in range(2):
                t0 = time.perf_counter()
                net(feed)
                per_image = min(per_image, (time.perf_counter() - t0) / batch)
    return per_image * count, per_image


def photo_bar(methods: list[str], layer: str, sanity: bool, n: int = 8) -> None:
    """Issue 12's bar: evaluate's wall time over the forward passes its metrics make, and peak memory."""
    import resource

    import torchvision

    from camlens.evaluation import evaluate
    from camlens.evaluation.run import _forward_batch, collect_maps
    from camlens.metrics import BASELINES, make_baseline
    from camlens.metrics._runner import DEFAULT_BUDGET, ProbeRunner
    from camlens.metrics.confidence import plan_confidence
    from camlens.metrics.perturbation import plan_curves
    from camlens.metrics.road import plan_road
    from camlens.metrics.sanity import layers_from_top

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = _photos(n)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ev, total = harness.timed(lambda: evaluate(model, x, methods=methods, layers=[layer], seeds=(0,), sanity=sanity))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(ev.table())

    # the floor: count the faithfulness passes from the same plans, on a runner that is planned and not run
    maps, _ = collect_maps(model, x, methods, [layer], 8)
    stacked = torch.stack([*maps.values(), *(BASELINES[b](x, 0) for b in BASELINES)])
    planned = ProbeRunner(model, x, torch.zeros(len(x), dtype=torch.long))
    ranks = saliency_rank(stacked, 0)
    plan_curves(planned, x, make_baseline(x, "zero"), ranks, 16)
    plan_curves(planned, make_baseline(x, "blur"), x, ranks, 16)
    plan_road(planned, x, ranks, ROAD_PERCENTAGES, 0.01, 0)
    plan_confidence(planned, x, stacked)
    passes = planned.forward_passes + len(x)  # + the predicted class of each image
    batch = ProbeRunner(model, x, torch.zeros(len(x), dtype=torch.long), budget=DEFAULT_BUDGET).batch_size
    forward_s, per_image = _forward_floor(model, x, passes, batch)
    sanity_calls, sanity_s = 0, 0.0
    if sanity:
        steps = len(layers_from_top(model, x[:1]))
        sanity_calls = len(methods) * 2 * (steps + 1)  # two modes, one call on the model and one per randomized step
        gc = GradCAM(model, layer)
        gc(x)
        t0 = time.perf_counter()
        for _ in range(3):
            gc(x[: _forward_batch(x, 512, DEFAULT_BUDGET)])
        sanity_s = (time.perf_counter() - t0) / 3 * sanity_calls
    floor = forward_s + sanity_s
    print(f"\nBAR photos: evaluate {total:.1f} s (timings {', '.join(f'{k} {v:.1f}' for k, v in ev.timings.items())})")
    print(f"  floor {floor:.1f} s = {passes} forward passes x {per_image * 1000:.1f} ms ({forward_s:.1f} s, "
          f"batch {batch}) + {sanity_calls} sanity explainer calls on {len(x)} images ({sanity_s:.1f} s)")
    print(f"  evaluate / floor = {total / floor:.2f} (bar: at most 3); peak RSS {rss:.0f} MiB "
          f"(before evaluate {rss0:.0f} MiB; bar: under 2048 MiB); {torch.get_num_threads()} threads")


def main() -> None:
    ap = harness.parser(__doc__, rounds=3)
    ap.set_defaults(threads=2)
    ap.add_argument("--checkpoint", default="build/bench-evaluate/convnet-seed0")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--n-images", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=None, help="default: up to 3 registered methods")
    ap.add_argument("--layers", nargs="+", default=["seq.0", "seq.2", "seq.4"])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--baselines", nargs="+", default=["random", "intensity", "edge"])
    ap.add_argument("--no-sanity", action="store_true")
    ap.add_argument("--json", default=None, help="also write the evaluation JSON here")
    ap.add_argument("--compare", type=int, nargs="?", const=0, default=None, metavar="REPS",
                    help="instead: time the metric phase before/after batching on --n-images, "
                         "REPS interleaved rounds (default --rounds)")  # fmt: skip
    ap.add_argument("--photos", action="store_true", help="instead: issue 12's ResNet-18 bar on 8 photos")
    args = ap.parse_args()
    threads = harness.set_threads(args.threads)
    if args.photos:
        n = 8 if args.n_images == 500 else args.n_images  # the bar's 8 photos unless --n-images says otherwise
        photo_bar(args.methods or ["gradcam", "hirescam"], "layer4", not args.no_sanity, n)
        return

    ckpt = Path(args.checkpoint)
    if not (ckpt / "meta.json").is_file():
        train(ckpt, args.train_seed)
    if args.compare is not None:
        compare(ckpt, args.n_images, args.compare or args.rounds, args.steps)
        return

    methods = args.methods
    if methods is None:
        real = [m for m in ("gradcam", "gradcam++", "guided-backprop") if m in METHODS]
        real += [m for m in sorted(METHODS) if m not in real]
        methods = real[:3]
        i = 1
        while len(methods) < 3:
            name = f"timing-copy-{i}"
            if name not in METHODS:
                register(name)(type(f"TimingCopy{i}", (GradCAM,), {}))
            methods.append(name)
            i += 1
        pad = [m for m in methods if m.startswith("timing-copy")]
        if pad:
            print(f"note: only {len(methods) - len(pad)} real method(s) registered; timing padded with {pad}")

    c0 = time.process_time()
    ev, total = harness.timed(lambda: evaluate_spec(
        str(ckpt), "fashion-mnist:test", n_images=args.n_images, device="cpu", methods=methods, layers=args.layers,
        seeds=args.seeds,
        steps=args.steps, sanity=not args.no_sanity, baselines=args.baselines,
    ))  # fmt: skip
    cpu = time.process_time() - c0
    print(ev.table())
    try:
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        load = "?"
    print(f"\nTOTAL evaluate_spec wall time: {total:.1f} s, process CPU time {cpu:.1f} s (load average {load}) "
          f"for {args.n_images} images x {len(methods)} methods x {len(args.layers)} layers + "
          f"{len(args.baselines)} baselines x {len(args.seeds)} seed(s), {threads} threads "
          f"(accuracy on these images {ev.config['accuracy_on_images']:.4f})")

    comp = {(r["entry"], r["metric"]): r for r in ev.comparisons("random")}
    print("\nBARS")
    for m in ("deletion", "insertion", "road"):
        r = comp[("gradcam@seq.4", m)]
        print(f"  gradcam@seq.4 - random, {m}: {r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] "
              f"{r['verdict']}")
    for r in ev.sanity_summary():
        if r["step"] == 0 and r["entry"].split("@")[0] in ("gradcam", "guided-backprop"):
            s = r["spearman"]
            print(f"  {r['entry']} {r['mode']}, randomized {r['randomized']}: Spearman {s['mean']:+.4f} "
                  f"[{s['low']:+.4f}, {s['high']:+.4f}], |.| {r['spearman_abs']['mean']:+.4f}, "
                  f"SSIM {r['ssim']['mean']:+.4f}")
    if args.json:
        ev.save_json(args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
