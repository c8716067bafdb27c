"""What camlens.keep_freed_memory() buys on the CPU: the same work in a process with glibc's default malloc
settings and in one that keeps freed memory (the ``camlens`` command's setting), side by side.

The setting belongs to the whole process and cannot be undone, so every timed call is a fresh child process
that sets it (or not), warms up, and times itself; the rounds alternate the order (benchmarks/harness.py,
"self-timed"). Work, one per child:

- ``forward``: the tutorial ConvNet on batches of 164 28x28 images (the metrics runner's CPU batch), 40 calls;
- ``scorecam``: camlens' Score-CAM on the ResNet-style benchmark model, 16 images of 3x64x64, at ``layer4``.

    PYTHONPATH=src python benchmarks/bench_allocator.py [--rounds 3] [--work forward,scorecam]
"""

from __future__ import annotations

import subprocess
import sys

import harness

_CHILD = r"""
import sys, time, torch
sys.path[:0] = sys.argv[3].split("|")
import camlens
keep, work = sys.argv[1] == "keep", sys.argv[2]
if keep:
    assert camlens.keep_freed_memory()
torch.set_num_threads(int(sys.argv[4]))
torch.manual_seed(0)
if work == "forward":
    from camlens.demo.models.convnet import ConvNet
    model = ConvNet().eval().to(memory_format=torch.channels_last)
    x = torch.rand(164, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    def call():
        with torch.inference_mode():
            for _ in range(40):
                model(x)
else:
    from models import resnet_small
    model = resnet_small(num_classes=100).eval()
    x = torch.randn(16, 3, 64, 64)
    classes = model(x).argmax(1).tolist()
    method = camlens.ScoreCAM(model, "layer4")
    def call():
        method(x, target=classes)
call()
t = time.perf_counter()
call()
print(time.perf_counter() - t)
"""


def child(mode: str, work: str, threads: int) -> float:
    """Seconds the child process measured for one call of ``work`` (after one warm-up call)."""
    paths = "|".join(str(p) for p in (harness.ROOT / "src", harness.HERE))
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, work, paths, str(threads)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = harness.parser(__doc__, rounds=3)
    p.add_argument("--work", default="forward,scorecam", help="comma-separated: forward, scorecam")
    args = p.parse_args()
    threads = harness.set_threads(args.threads)
    works = [w.strip() for w in args.work.split(",") if w.strip()]
    runs = {
        f"{work} {mode}": (lambda m=mode, w=work: child(m, w, threads))
        for work in works
        for mode in ("default", "keep")
    }
    run = harness.SideBySide(runs, mode="self-timed", alternate=True, label="allocator").run(args.rounds, warmup=0)
    print(f"# {threads} threads, median of {args.rounds} alternating rounds, one child process per call")
    harness.print_ratios(run, [(f"{w} default", f"{w} keep") for w in works])


if __name__ == "__main__":
    main()
