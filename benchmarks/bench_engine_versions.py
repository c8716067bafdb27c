"""The engine against an earlier commit of itself: camlens/floor for both, measured side by side.

    python benchmarks/bench_engine_versions.py --base 1c62d38     # CPU: ConvNet and ResNet-style, b1 and b64

The base commit's ``src/camlens`` is taken with ``git archive`` into a temporary
folder and imported as ``camlens_base`` (its absolute ``camlens`` imports are
renamed), so both versions run in one process, interleaved round by round,
against the same floor (a bare forward pass plus ``torch.autograd.grad`` to the
layer, as in bench_engine.py). A refactor that leaves the engine alone keeps
``current/base`` at 1 within the noise.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

import camlens
import harness
from bench_engine import make

ROOT = Path(__file__).resolve().parents[1]


def import_base(rev: str, into: Path):
    """``camlens`` as it was at ``rev``, imported under the name ``camlens_base``."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src/camlens"], check=True,
                          capture_output=True).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "camlens").rename(into / "camlens_base")
    for path in (into / "camlens_base").rglob("*.py"):
        text = re.sub(r"\bcamlens(?=[.\s])", "camlens_base", path.read_text())
        path.write_text(text.replace('version("camlens_base")', 'version("camlens")'))
    sys.path.insert(0, str(into))
    return importlib.import_module("camlens_base")


def main() -> None:
    p = harness.parser(__doc__, rounds=15)
    p.add_argument("--base", default="1c62d38", help="the earlier commit (default 1c62d38, before the house layout)")
    args = p.parse_args()
    threads = harness.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(args.base, Path(tmp))
        print(f"camlens at {args.base} vs the working tree, {threads} thread(s), {args.rounds} interleaved rounds")
        harness.print_table(["model", "batch", "floor ms", "base ms", "current ms", "base/floor", "current/floor",
                             "current/base (paired)"], [])  # fmt: skip
        for name, batch in [("convnet", 1), ("convnet", 64), ("resnet-small", 1), ("resnet-small", 64)]:
            model, x, layer, split = make(name, batch, "cpu")
            old, new = base.GradCAM(model, layers=layer), camlens.GradCAM(model, layers=layer)
            assert torch.allclose(old(x).maps[layer], new(x).maps[layer], atol=1e-6), "the two versions' maps differ"

            def floor(split=split, x=x):
                a, head = split(x)
                out = head(a)
                return torch.autograd.grad(out.gather(1, out.argmax(1, keepdim=True)).sum(), a)[0]

            fns = {"floor": floor, "base": lambda c=old, x=x: c(x), "current": lambda c=new, x=x: c(x)}
            run = harness.SideBySide(fns, alternate=True, label="engine versions", sub_label=f"{name} b{batch}")
            run = run.run(args.rounds, warmup=2)
            ms = {k: v * 1e3 for k, v in run.medians().items()}
            harness.print_row([name, batch, f"{ms['floor']:.2f}", f"{ms['base']:.2f}", f"{ms['current']:.2f}",
                               f"{run.ratio('base', 'floor'):.3f}", f"{run.ratio('current', 'floor'):.3f}",
                               f"{run.paired_ratio('current', 'base'):.3f}"])  # fmt: skip


if __name__ == "__main__":
    main()
