"""Time `camlens evaluate` on the demo ConvNet and report the issue's bars.

Trains the tutorial ConvNet on the bundled Fashion-MNIST sample (a plain loop:
Adam 1e-3, batch 128, 5 epochs) unless the checkpoint exists, then evaluates
N test images x methods x layers x seeds and prints the table, the timings and
the bar figures (Grad-CAM@seq.4 vs the random map; Spearman after randomizing
the final linear layer).

    PYTHONPATH=src python benchmarks/bench_evaluate.py --threads 2
    PYTHONPATH=src python benchmarks/bench_evaluate.py --seeds 0 --n-images 500   # the timing bar, one seed

If fewer than three methods are registered, the run is padded with copies of
Grad-CAM registered under "timing-copy-N" in this process only, so the timing
covers 3 methods x 3 layers of the same per-map cost; the output says so.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from camlens.checkpoint import save_checkpoint
from camlens.data import CLASSES, FashionMNIST
from camlens.evaluate import evaluate_checkpoint
from camlens.methods import METHODS, GradCAM, register
from camlens.models import ConvNet


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
    save_checkpoint(
        path, model, {"architecture": "convnet", "classes": list(CLASSES), "epochs": epochs, "accuracy": acc, "seed": seed}
    )
    print(f"trained {path} in {time.perf_counter() - t0:.1f} s: test accuracy {acc:.4f}")
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="build/bench-evaluate/convnet-seed0")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--n-images", type=int, default=500)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=None, help="default: up to 3 registered methods")
    ap.add_argument("--layers", nargs="+", default=["seq.0", "seq.2", "seq.4"])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baselines", nargs="+", default=["random", "intensity", "edge"])
    ap.add_argument("--no-sanity", action="store_true")
    ap.add_argument("--json", default=None, help="also write the evaluation JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ckpt = Path(args.checkpoint)
    if not (ckpt / "meta.json").is_file():
        train(ckpt, args.train_seed)

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

    t0, c0 = time.perf_counter(), time.process_time()
    ev = evaluate_checkpoint(
        ckpt, n_images=args.n_images, methods=methods, layers=args.layers, seeds=args.seeds,
        steps=args.steps, sanity=not args.no_sanity, baselines=args.baselines,
    )
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(ev.table())
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "?"
    print(f"\nTOTAL evaluate_checkpoint wall time: {total:.1f} s, process CPU time {cpu:.1f} s (load average {load}) for {args.n_images} images x {len(methods)} methods "
          f"x {len(args.layers)} layers + {len(args.baselines)} baselines x {len(args.seeds)} seed(s), {args.threads} threads "
          f"(accuracy on these images {ev.config['accuracy_on_images']:.4f})")

    comp = {(r["entry"], r["metric"]): r for r in ev.comparisons("random")}
    print("\nBARS")
    for m in ("deletion", "insertion", "road"):
        r = comp[("gradcam@seq.4", m)]
        print(f"  gradcam@seq.4 - random, {m}: {r['difference']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}] {r['verdict']}")
    for r in ev.sanity_summary():
        if r["step"] == 0 and r["entry"].split("@")[0] in ("gradcam", "guided-backprop"):
            s = r["spearman"]
            print(f"  {r['entry']} {r['mode']}, randomized {r['randomized']}: Spearman {s['mean']:+.4f} "
                  f"[{s['low']:+.4f}, {s['high']:+.4f}], |.| {r['spearman_abs']['mean']:+.4f}, SSIM {r['ssim']['mean']:+.4f}")
    if args.json:
        ev.save_json(args.json)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
