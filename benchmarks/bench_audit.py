"""Does the audit find planted shortcuts, and nothing on clean models? And how fast does it audit 10,000 items?

Planted runs: the tutorial's ConvNet is trained on the bundled Fashion-MNIST
sample with a small bright square (``MARK`` pixels a side, value 255) stamped
at a fixed place on every training image of ONE class and on no other; the
test split, with the same mark on that class's images, is explained with
HiResCAM at ``seq.4`` (a map faithful for this model: Grad-CAM misses the
mark, see docs/audit.md) and audited. A planted run counts as detected when
the audit flags the planted class with a region that covers the mark, and
every other flag is a false flag. The clean models (same seeds, no mark) must
get no flag at all.

    python benchmarks/bench_audit.py                      # 3 seeds x 3 planted cases + 3 clean models
    python benchmarks/bench_audit.py --seeds 0 --epochs 2 # quicker (the tutorial's recipe, the default, is 5)
    python benchmarks/bench_audit.py --timing-only        # only the 10,000-item timing

Timing: the audit (statistics, clusters, findings, audit.json and the whole
explorer with its PNGs) of 10,000 items, on ``--threads`` threads (2 by
default). The 10,000 items' results are synthesized cheaply but written by
:func:`camlens.explain_dataset` itself, so shards, manifest and images are
real: the data cycles through the real test split (item ``i`` is test item
``i % 4443``, with a mark on the Trousers), and the model is a one-convolution
network with random weights (seeded), explained with HiResCAM and Grad-CAM at
that convolution: two 28 x 28 maps per item, as the tutorial ConvNet's
``seq.4`` gives. What the audit costs depends on the number of items, maps and
their sizes, and the images, not on the model that made the maps.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

import harness  # first: puts src/, tests/ and benchmarks/ on sys.path

#: the mark's side in pixels.
MARK = 3
#: the planted cases: (class, (row, column) of the mark's top-left pixel).
CASES: tuple[tuple[int, tuple[int, int]], ...] = ((1, (1, 1)), (5, (1, 24)), (8, (24, 24)))


def stamp(images: Tensor, labels: Tensor, cls: int, pos: tuple[int, int], size: int = MARK) -> Tensor:
    """A copy of uint8 ``images (N, 28, 28)`` with a ``size``-pixel white square at ``pos`` on class ``cls``."""
    out = images.clone()
    r, c = pos
    out[labels == cls, r : r + size, c : c + size] = 255
    return out


def _write_idx(path: Path, array: Tensor) -> None:
    """An IDX file (gzip) of a uint8 tensor: the format :func:`camlens.demo.data.load_split` reads."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(header + array.contiguous().numpy().tobytes())


def planted_folder(root: Path, case: tuple[int, tuple[int, int]] | None) -> Path:
    """The bundled sample written as IDX files under ``root``, marked on one class (``case``) or clean."""
    from camlens.demo.data import FILES, load_split

    root.mkdir(parents=True, exist_ok=True)
    for split, (img_name, lbl_name) in FILES.items():
        images, labels = load_split(None, split)
        if case is not None:
            images = stamp(images, labels, *case)
        _write_idx(root / f"{img_name}.gz", images)
        _write_idx(root / f"{lbl_name}.gz", labels.to(torch.uint8))
    return root


def train_model(data: Path, seed: int, epochs: int) -> torch.nn.Module:
    """The tutorial's ConvNet trained on the IDX folder ``data`` (Adam 1e-3, batch 128), seeded."""
    from camlens.demo.train import train

    result = train(data=data, epochs=epochs, seed=seed, device="cpu", progress=False, log=None)
    return result.model.to(memory_format=torch.contiguous_format)


def explain_and_audit(model: torch.nn.Module, data: Path, work: Path, **audit_kw: object) -> dict:
    """Explain ``data``'s test split with HiResCAM at seq.4, audit it into ``work/audit``; the audit's JSON."""
    import camlens
    from camlens.demo.sources import IDXDataset

    ds = IDXDataset(data, "test")
    camlens.explain_dataset(model, ds, work / "maps", methods=["hirescam"], layers=["seq.4"], device="cpu",
                            dtype="float32", progress=False)  # fmt: skip
    camlens.audit(work / "maps", work / "audit", data=ds, **audit_kw)
    return json.loads((work / "audit" / "audit.json").read_text())


def covers(region: list[int] | None, pos: tuple[int, int], size: int = MARK) -> bool:
    """Whether the box ``[x0, y0, x1, y1]`` (input pixels, end exclusive) overlaps at least half the mark."""
    if region is None:
        return False
    x0, y0, x1, y1 = region
    r, c = pos
    ov = max(0, min(x1, c + size) - max(x0, c)) * max(0, min(y1, r + size) - max(y0, r))
    return ov * 2 >= size * size


def judge(report: dict, case: tuple[int, tuple[int, int]] | None) -> tuple[bool, int]:
    """``(planted class flagged with a region on the mark, number of other flags)``."""
    found, false = False, 0
    for c in report["classes"]:
        if not c["flagged"]:
            continue
        if case is not None and c["class"] == case[0] and covers(c["region"], case[1]):
            found = True
        else:
            false += 1
    return found, false


def reliance(model: torch.nn.Module, data: Path, case: tuple[int, tuple[int, int]]) -> tuple[float, float]:
    """Accuracy on the planted class's test items with the mark, and with the mark blanked (set to 0).

    A model that reads only the mark falls to about 0 without it; one that also reads the object keeps
    much of its accuracy, and an audit that flags nothing on it may be right.
    """
    from camlens.demo.data import load_split

    images, labels = load_split(data, "test")
    cls, (r, c) = case
    x = images[labels == cls].float().div(255)[:, None]
    blank = x.clone()
    blank[:, :, r : r + MARK, c : c + MARK] = 0
    with torch.inference_mode():
        return tuple(float((model(v).argmax(1) == cls).float().mean()) for v in (x, blank))  # type: ignore[return-value]


def lifts(report: dict, case: tuple[int, tuple[int, int]] | None) -> str:
    """The planted class's lift and the largest other one, for the log."""
    by = {c["class"]: (c["evidence"] or {}).get("lift") or 0.0 for c in report["classes"]}
    planted = f"planted class lift {by.pop(case[0]):.1f}, " if case is not None else ""
    return f"{planted}largest other lift {max(by.values()):.1f}"


class Cycled(Dataset):
    """``n`` items cycling through ``inner`` (the timing's 10,000 items from the 4443 test items)."""

    def __init__(self, inner: Dataset, n: int) -> None:
        self.inner, self.n = inner, n
        self.classes = getattr(inner, "classes", None)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.inner[i % len(self.inner)]  # type: ignore[arg-type]


def time_audit(data: Path, work: Path, n: int) -> tuple[float, float]:
    """``(wall, CPU)`` seconds to audit ``n`` items (explained beforehand, off the clock), explorer included.

    The CPU time (all threads of the process) says what the audit costs when the machine is shared."""
    import camlens
    from camlens.demo.sources import IDXDataset

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 28 * 28, 10))  # fmt: skip
    ds = Cycled(IDXDataset(data, "test"), n)
    camlens.explain_dataset(model, ds, work / "maps", methods=["hirescam", "gradcam"], layers=["0"],
                            device="cpu", progress=False)  # fmt: skip
    t0, c0 = time.perf_counter(), time.process_time()
    camlens.audit(work / "maps", work / "audit", data=ds, method="hirescam", layer="0")
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    p = harness.parser(__doc__, rounds=1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5, help="the tutorial's recipe: 5")
    p.add_argument("--items", type=int, default=10_000, help="items of the timed audit")
    p.add_argument("--timing-only", action="store_true")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep each run's data, weights, maps and audit under this folder (default: a temporary one)",
    )
    args = p.parse_args()
    threads = harness.set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        root = Path(tmp) if args.keep is None else args.keep
        if not args.timing_only:
            detected, runs, false_planted, false_clean = 0, 0, 0, 0
            for seed in args.seeds:
                for case in (*CASES, None):
                    name = "clean" if case is None else f"class {case[0]} mark at {case[1]}"
                    work = root / f"s{seed}-{'clean' if case is None else case[0]}"
                    data = planted_folder(work / "data", case)
                    t0 = time.perf_counter()
                    model = train_model(data, seed, args.epochs)
                    if args.keep is not None:
                        torch.save(model.state_dict(), work / "weights.pt")
                    report = explain_and_audit(model, data, work, explorer=False)
                    found, false = judge(report, case)
                    flags = [(c["class"], c["region"]) for c in report["classes"] if c["flagged"]]
                    relied = ""
                    if case is not None:
                        kept, blanked = reliance(model, data, case)
                        relied = f"; accuracy on the class with/without the mark {kept:.2f}/{blanked:.2f}"
                    print(f"seed {seed} {name}: found={found} false flags={false} flags={flags}; {lifts(report, case)}"
                          f"{relied} ({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
                    if case is None:
                        false_clean += false
                    else:
                        runs += 1
                        detected += found
                        false_planted += false
            print(f"\ndetected {detected} of {runs} planted runs; false flags: {false_planted} on the planted "
                  f"models, {false_clean} on {len(args.seeds)} clean models ({args.epochs} epochs each)")  # fmt: skip
        if not args.no_timing:
            work = root / "timing"
            data = planted_folder(work / "data", CASES[0])
            wall, cpu = time_audit(data, work, args.items)
            load = os.getloadavg()[0]
            print(f"audit of {args.items} items (explorer included) on {threads} thread(s): {wall:.1f} s wall, "
                  f"{cpu:.1f} s CPU (load average {load:.1f} on {os.cpu_count()} CPUs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
