"""explain-dataset against the engine's own throughput, and its peak memory at 1x and 4x the items.

CPU (default): the demo ConvNet on the bundled Fashion-MNIST test sample (4443
images), Grad-CAM at ``seq.4``. The floor is the engine called on in-memory
batches of the same size (``GradCAM(..., upsample=False, normalize=False)``,
exactly what the driver calls); the driver adds data loading, softmax,
the mass-inside statistic, float16 conversion, shards, checksums, the manifest
and the per-class statistics. Both are timed interleaved in one run, the order
alternating (benchmarks/harness.py, ``--rounds``/``--repeats``); medians, and
the median of the per-repeat ratios.

Peak RSS: the driver in a fresh subprocess at N and 4N items (``ru_maxrss``),
interleaved, medians.

Photos (``--data photos``): a class-per-folder set of JPEG photos of mixed
sizes (skimage.data's photos at random sizes, 200-500 px a side), read by
explain-dataset through the model's preprocessing at 224x224 (shorter side to
256, centre crop, ImageNet mean and std): decoding, resizing, Grad-CAM, shards.
The engine's floor runs on the same photos already preprocessed, in memory.
ResNet-50 (``--model resnet50``) at ``layer4``.

GPU (``--device cuda --model resnet50``): ResNet-50 at 224x224 on a dataset of
random images made on the fly (or ``--data photos``), Grad-CAM at ``layer4``;
reports images/s for the engine and the driver, and the GPU utilisation sampled
every 0.1 s during the driver's run (``torch.cuda.utilization()``, or ``nvidia-smi``).

    PYTHONPATH=src python benchmarks/bench_dataset.py                  # CPU bars
    PYTHONPATH=src python benchmarks/bench_dataset.py --data photos --model resnet50 --items 64 --batch-size 16
    PYTHONPATH=src python benchmarks/bench_dataset.py --device cuda --model resnet50 --items 20000 --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

# benchmarks/ on sys.path also when camlens loads this file for --data benchmarks/bench_dataset.py:random_images
sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # puts src/ and benchmarks/ on sys.path


class RandomImages(Dataset):
    """``n`` random images ``(3, size, size)`` with labels, each made from its index (same bytes every time)."""

    object_mask = False

    def __init__(self, n: int = 20000, size: int = 224, classes: int = 1000) -> None:
        self.n, self.size, self.classes = n, size, classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g), i % self.classes


def random_images() -> RandomImages:
    """Dataset factory for ``--data benchmarks/bench_dataset.py:random_images`` (size from $BENCH_IMAGE_SIZE)."""
    return RandomImages(int(os.environ.get("BENCH_ITEMS", "20000")), int(os.environ.get("BENCH_IMAGE_SIZE", "224")))


IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def photo_folder(root: Path, n: int, classes: int = 4) -> Path:
    """``n`` JPEG photos of random sizes (200-500 px a side), item ``i`` in class folder ``i % classes``."""
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    rng = np.random.default_rng(0)
    sources = [Image.fromarray(getattr(skdata, name)()).convert("RGB") for name in PHOTOS]
    for i in range(n):
        w, h = (int(v) for v in rng.integers(200, 501, size=2))
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        sources[i % len(sources)].resize((w, h), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def build(name: str, device: str):
    from camlens.demo.models import ConvNet
    from models import resnet50, resnet_small

    torch.manual_seed(0)
    if name == "convnet":
        model, layer = ConvNet(), "seq.4"
    elif name == "resnet50":
        model, layer = resnet50(), "layer4"
    elif name == "resnet_small":
        model, layer = resnet_small(), "layer4"
    else:
        raise SystemExit(f"--model {name!r}: choose convnet, resnet_small or resnet50")
    return model.to(device).eval(), layer


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class GPUSampler:
    """Sample GPU utilisation (%) every ``period`` seconds in a thread."""

    def __init__(self, period: float = 0.1) -> None:
        self.period, self.samples, self._stop = period, [], threading.Event()
        self.how = "torch.cuda.utilization"
        try:
            torch.cuda.utilization()
        except Exception:
            self.how = "nvidia-smi" if shutil.which("nvidia-smi") else "none"

    def _read(self) -> float | None:
        if self.how == "torch.cuda.utilization":
            return float(torch.cuda.utilization())
        if self.how == "nvidia-smi":
            idx = torch.cuda.current_device()
            out = subprocess.run(
                ["nvidia-smi", f"--id={idx}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True,
            )  # fmt: skip
            return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 else None
        return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self._read()
            if v is not None:
                self.samples.append(v)
            self._stop.wait(self.period)

    def __enter__(self) -> GPUSampler:
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


#: the clock the passes are timed with: wall time (``--clock wall``), or this process's CPU time over all its
#: threads (``--clock cpu``: the work done, which load from other processes on a shared machine does not inflate)
CLOCK = time.perf_counter


def engine_pass(model, layer: str, batches: list[torch.Tensor], device: str) -> float:
    import camlens

    cam = camlens.GradCAM(model, layer, upsample=False, normalize=False)
    sync(device)
    t = CLOCK()
    for xb in batches:
        cam(xb)
    sync(device)
    return CLOCK() - t


def driver_pass(model, data, layer: str, args, device: str, sampler: GPUSampler | None = None,
                preprocess=None) -> float:  # fmt: skip
    import contextlib

    import camlens

    out = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    try:
        sync(device)
        t = CLOCK()
        with sampler if sampler is not None else contextlib.nullcontext():
            camlens.explain_dataset(model, data, out, layers=layer, batch_size=args.batch_size,
                                    shard_size=args.shard_size, limit=args.items, num_workers=args.num_workers,
                                    progress=False, preprocess=preprocess)  # fmt: skip
        sync(device)
        return CLOCK() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)


def rss_child(items: int, shard_size: int, batch_size: int) -> None:
    """Subprocess body: one driver run, then print this process's peak RSS in KiB."""
    import camlens

    model, layer = build("convnet", "cpu")
    with tempfile.TemporaryDirectory() as out:
        camlens.explain_dataset(model, "fashion-mnist:test", out, layers=layer, limit=items, shard_size=shard_size,
                                batch_size=batch_size, progress=False)  # fmt: skip
    print(json.dumps({"items": items, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    p = harness.parser(__doc__, rounds=5, rounds_aliases=("--repeats",))
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="convnet", help="convnet | resnet_small | resnet50")
    p.add_argument("--items", type=int, default=None, help="items to explain (default: the whole test sample / 20000)")
    p.add_argument("--image-size", type=int, default=224, help="for the random-image dataset (ResNets)")
    p.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="time each pass by the wall clock, or by this process's CPU time (all threads)",
    )
    p.add_argument("--data", default="default", choices=["default", "photos"],
                   help="default: Fashion-MNIST (convnet) or random tensors (ResNets); photos: JPEG files of mixed "
                        "sizes preprocessed to 224x224")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 0 on CPU, 8 on CUDA)")
    p.add_argument("--rss-items", type=int, default=1000, help="N for the peak-RSS check at N and 4N items")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child is not None:
        rss_child(args.rss_child, args.shard_size, args.batch_size)
        return
    threads = harness.set_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.num_workers is None:
        args.num_workers = 8 if args.device.startswith("cuda") else 0
    torch.manual_seed(0)
    model, layer = build(args.model, args.device)

    # ---- the data, and the same items in memory for the engine --------------------------------
    preprocess = None
    if args.data == "photos":
        from camlens.preprocess import Preprocess
        from camlens.sources import ImageFolder

        args.items = args.items or 64
        data = str(photo_folder(Path(tempfile.mkdtemp(prefix="bench-photos-")), args.items))
        preprocess = Preprocess(size=256, crop=(224, 224), **IMAGENET, source="benchmark: ImageNet's")
        folder = ImageFolder(data, preprocess=preprocess)
        x = torch.stack([folder[i][0] for i in range(len(folder))])
        batches = [x[i : i + args.batch_size].to(args.device, copy=True) for i in range(0, len(x), args.batch_size)]
    elif args.model == "convnet":
        from camlens.demo.data import FashionMNIST

        data: object = "fashion-mnist:test"
        x, _ = FashionMNIST(split="test").tensors()
        if args.items is not None:
            x = x[: args.items]
        args.items = len(x)
        batches = [x[i : i + args.batch_size].to(args.device, copy=True) for i in range(0, len(x), args.batch_size)]
    else:
        args.items = args.items or 20000
        data = RandomImages(args.items, args.image_size)
        # in-memory floor: a few distinct batches on the device, cycled (the whole set would not fit)
        shape = (args.batch_size, 3, args.image_size, args.image_size)
        distinct = [torch.rand(shape, device=args.device) for _ in range(4)]
        n_batches = -(-args.items // args.batch_size)
        batches = [distinct[i % 4] for i in range(n_batches)]

    print(f"device={args.device} model={args.model} data={args.data} layer={layer} items={args.items} "
          f"batch={args.batch_size} clock={args.clock} "
          f"shard={args.shard_size} workers={args.num_workers} torch={torch.__version__} "
          f"threads={threads}")  # fmt: skip
    # warm-up (kernels, allocator, page cache), not timed
    engine_pass(model, layer, batches[:2], args.device)
    few = argparse.Namespace(**{**vars(args), "items": min(args.items, 2 * args.batch_size)})
    driver_pass(model, data, layer, few, args.device, preprocess=preprocess)

    util: list[float] = []

    def driver() -> float:
        sampler = GPUSampler() if args.device.startswith("cuda") else None
        seconds = driver_pass(model, data, layer, args, args.device, sampler, preprocess)
        if sampler is not None and sampler.samples:
            util.append(statistics.mean(sampler.samples))
        return seconds

    # interleaved, order alternating (AB BA ...) so that drift favours neither; each pass times itself
    run = harness.SideBySide({"engine": lambda: engine_pass(model, layer, batches, args.device), "driver": driver},
                             mode="self-timed", alternate=True).run(args.rounds)  # fmt: skip
    eng, drv = run.per_round("engine"), run.per_round("driver")
    e, d = run.median("engine"), run.median("driver")
    result = {
        "engine_items_per_s": args.items / e,
        "driver_items_per_s": args.items / d,
        "driver_over_engine": e / d,
        "engine_s": [round(v, 4) for v in eng],
        "driver_s": [round(v, 4) for v in drv],
    }
    print(f"engine on in-memory batches: {args.items / e:9.1f} items/s  (median of {args.rounds}: {e:.3f} s)")
    print(f"explain_dataset, end to end: {args.items / d:9.1f} items/s  (median of {args.rounds}: {d:.3f} s)")
    paired = run.paired_ratio("engine", "driver")
    result["paired_ratio_median"] = paired
    print(f"driver / engine throughput:  {e / d:9.3f}  (bar: >= 0.9); median of per-repeat ratios {paired:.3f}")
    if util:
        result["gpu_utilisation_pct"] = util
        print(
            f"GPU utilisation during explain_dataset: mean {statistics.mean(util):.1f} % "
            f"per run {[f'{u:.1f}' for u in util]}"
        )

    if not args.skip_rss and not args.device.startswith("cuda") and args.data == "default":
        n = args.rss_items
        rss: dict[int, list[int]] = {n: [], 4 * n: []}
        env = dict(os.environ)
        for _ in range(3):
            for items in (n, 4 * n):
                out = subprocess.run(
                    [sys.executable, __file__, "--rss-child", str(items), "--shard-size", "256",
                     "--batch-size", str(args.batch_size)],
                    capture_output=True, text=True, check=True, env=env,
                )  # fmt: skip
                rss[items].append(json.loads(out.stdout.strip().splitlines()[-1])["maxrss_kib"])
        r1, r4 = statistics.median(rss[n]), statistics.median(rss[4 * n])
        result.update({"rss_kib": {str(k): v for k, v in rss.items()}, "rss_4x_over_1x": r4 / r1})
        print(f"peak RSS, {n} items: {r1 / 1024:.1f} MiB; {4 * n} items: {r4 / 1024:.1f} MiB; "
              f"ratio {r4 / r1:.3f} (medians of 3; runs {rss})")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
