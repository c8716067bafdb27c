"""Time `camlens explain` on photos of mixed sizes against the engine on the same preprocessed tensors.

The bar (issue 14): the command (decoding, preprocessing, batching, figures
off) stays within 1.3x of Grad-CAM called directly on the tensors the command
feeds the model, with the same batch size.

- photos: N JPEG/PNG files of mixed sizes (and one grayscale in every eight)
  cut from scikit-image's sample photographs, written once to a temporary folder;
- model: torchvision's ResNet-50 with random weights, built once and shared by
  both contenders (the command loads it through a factory returning it, so
  building it is on neither clock);
- command: ``camlens.cli.explain.run`` in-process, ``--size 256 --crop 224``
  with ImageNet's mean and std, ``--layers layer4``, ``--no-figures``;
- engine: ``camlens.GradCAM(model, "layer4")`` on the same tensors
  (``Preprocess(...)`` of every photo, done before timing), in batches of the
  same size.

    PYTHONPATH=src python benchmarks/bench_explain.py --threads 2                 # 64 photos, 3 rounds
    PYTHONPATH=src python benchmarks/bench_explain.py --threads 2 --n-images 16 --rounds 2   # a quick look

Both run through benchmarks/harness.py: interleaved, order alternating, each
contender timed once per round; the figure is the ratio of medians. On a
machine shared with other work, ``--clock cpu`` times the process's CPU time
(all its threads; the harness's "self-timed" mode) instead of the wall clock,
which other processes' load makes noisy.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
import camlens
from camlens.preprocess import Preprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: the model both contenders explain; the command's factory returns it.
MODEL: nn.Module | None = None


def shared_model() -> nn.Module:
    """The factory the command loads: the model built once by :func:`main`."""
    assert MODEL is not None
    return MODEL


def write_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` photos of mixed sizes (200 to 640 pixels a side), JPEG and PNG, one in eight grayscale."""
    from PIL import Image
    from skimage import data

    sources = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera()]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = sources[i % len(sources)]
        im = Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB")
        w, h = (int(v) for v in rng.integers(200, 641, size=2))
        im = im.resize((w, h), Image.Resampling.BILINEAR)
        if i % 8 == 7:
            im = im.convert("L")
        path = folder / f"photo-{i:03d}.{'jpg' if i % 2 else 'png'}"
        im.save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def command(folder: Path, out: Path, batch_size: int) -> None:
    """``camlens explain`` in-process: the command's parser and run function, its printing swallowed."""
    import argparse

    from camlens.cli import explain

    parser = argparse.ArgumentParser(prog="camlens explain")
    explain.add_arguments(parser)
    args = parser.parse_args([
        "bench_explain:shared_model", str(folder), "--size", "256", "--crop", "224",
        "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), "--layers", "layer4",
        "--batch-size", str(batch_size), "--no-figures", "--out", str(out), "--device", "cpu",
    ])  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        assert explain.run(args) == 0


def engine(model: nn.Module, xs: list[torch.Tensor], batch_size: int) -> None:
    """Grad-CAM on the preprocessed tensors, in batches of the same size (all photos are 224x224 after the crop)."""
    cam = camlens.GradCAM(model, "layer4")
    x = torch.stack(xs)
    for chunk in x.split(batch_size):
        cam(chunk)


def cpu_seconds(fn: Callable[[], None]) -> float:
    """The CPU time (every thread of this process) one call of ``fn`` takes."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def main() -> None:
    global MODEL
    ap = harness.parser(__doc__, rounds=3)
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall-clock time (default) or the process's CPU time (for a machine shared with others)")
    args = ap.parse_args()
    threads = harness.set_threads(args.threads)
    import torchvision

    import bench_explain as me  # the module the command's factory imports (this file runs as __main__)

    torch.manual_seed(0)
    MODEL = me.MODEL = torchvision.models.resnet50(weights=None).eval()
    tmp = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    try:
        folder = tmp / "photos"
        folder.mkdir()
        paths = write_photos(folder, args.n_images)
        pre = Preprocess(size=256, crop=(224, 224), mean=MEAN, std=STD)
        xs = [pre(p)[0] for p in paths]
        fns: dict[str, Callable[[], object]] = {
            "engine": lambda: engine(MODEL, xs, args.batch_size),
            "command": lambda: command(folder, tmp / "out", args.batch_size),
        }
        if args.clock == "cpu":
            fns = {name: (lambda fn=fn: cpu_seconds(fn)) for name, fn in fns.items()}

        def report(r: int, name: str, seconds: float) -> None:
            print(f"  round {r} {name}: {seconds:.2f} s", flush=True)

        mode = "self-timed" if args.clock == "cpu" else "once"
        run = harness.SideBySide(fns, mode=mode, alternate=True, after_each=report).run(args.rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"camlens explain vs Grad-CAM on the same tensors: {args.n_images} photos of mixed sizes, ResNet-50 "
          f"(random weights), batch {args.batch_size}, {threads} threads, {args.rounds} rounds, {args.clock} clock "
          "(bar: <= 1.3x)")
    harness.print_ratios(run, [("command", "engine")])


if __name__ == "__main__":
    main()
