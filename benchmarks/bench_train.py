"""Time an epoch of `camlens train` against a plain tutorial-style loop, side by side, interleaved.

Both train the tutorial's ConvNet on the same data (the bundled sample by
default) with the same recipe (Adam 1e-3, batch 128) from the same initial
weights (same seed), for the same number of epochs. Their epochs alternate
(plain, camlens, plain, camlens, ...) so both see the same machine load;
the figures are medians over epochs (wall clock, and CPU time of the process,
which a busy shared machine disturbs less). Each epoch = training pass + validation.

The plain loop is the tutorial's pattern: a DataLoader over a TensorDataset
(shuffle, batch 128) for training and for validation, then a validation-loss
pass and a separate accuracy pass (both under no_grad here, which is kinder
to the plain loop than the tutorial, whose accuracy pass keeps autograd on).

Each epoch is one round of benchmarks/harness.py (``--rounds`` is ``--epochs``);
training changes the models, so every epoch is timed once (``harness.timed``).

Run:  PYTHONPATH=src python benchmarks/bench_train.py [--epochs 5] [--seed 0] [--threads 2]
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import harness  # first: puts src/ and benchmarks/ on sys.path

# isort: split
from camlens.demo.data import load_split
from camlens.demo.models import ConvNet
from camlens.demo.train import _as_float, evaluate, train_epoch


def plain_epoch(model: nn.Module, opt: torch.optim.Optimizer, train_loader: DataLoader, val_loader: DataLoader):
    """The tutorial's epoch: train over the loader, then a val-loss pass, then an accuracy pass."""
    loss_fn = nn.CrossEntropyLoss()
    t = {"data": 0.0, "step": 0.0, "val_loss_pass": 0.0, "accuracy_pass": 0.0}
    model.train()
    losses = []
    it = iter(train_loader)
    while True:
        ta = time.perf_counter()
        try:
            xb, yb = next(it)
        except StopIteration:
            break
        tb = time.perf_counter()
        loss = loss_fn(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        t["data"] += tb - ta
        t["step"] += time.perf_counter() - tb
    model.eval()
    tv = time.perf_counter()
    with torch.no_grad():
        val_losses = [loss_fn(model(xb), yb).item() for xb, yb in val_loader]
    ta = time.perf_counter()
    t["val_loss_pass"] = ta - tv
    with torch.no_grad():
        preds, ys = [], []
        for xb, yb in val_loader:
            preds.append(model(xb).argmax(-1))
            ys.append(yb)
        acc = float((torch.cat(preds) == torch.cat(ys)).float().mean())
    t["accuracy_pass"] = time.perf_counter() - ta
    return sum(losses) / len(losses), sum(val_losses) / len(val_losses), acc, t


def main() -> None:
    p = harness.parser(__doc__, rounds=5, rounds_aliases=("--epochs",))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="IDX folder (default: the bundled sample)")
    args = p.parse_args()
    threads = harness.set_threads(args.threads)
    epochs = args.rounds

    tr_img, tr_lbl = load_split(args.data, "train")
    va_img, va_lbl = load_split(args.data, "test")
    print(f"data: {len(tr_lbl)} train, {len(va_lbl)} validation images; torch {torch.__version__}, "
          f"{threads} threads; {epochs} epochs each, interleaved")

    # plain: float tensors, TensorDataset, DataLoader (as in the tutorial)
    px, vx = tr_img.unsqueeze(1).float() / 255.0, va_img.unsqueeze(1).float() / 255.0
    g = torch.Generator().manual_seed(args.seed)
    train_loader = DataLoader(TensorDataset(px, tr_lbl), batch_size=128, shuffle=True, generator=g)
    val_loader = DataLoader(TensorDataset(vx, va_lbl), batch_size=128, shuffle=True, generator=g)
    torch.manual_seed(args.seed)
    plain = ConvNet()
    plain_opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

    # camlens: the code `camlens train` runs (same data prep, epoch and validation functions)
    cx, cy = _as_float(tr_img, torch.device("cpu")), tr_lbl
    cvx, cvy = _as_float(va_img, torch.device("cpu")), va_lbl
    torch.manual_seed(args.seed)
    cam = ConvNet().to(memory_format=torch.channels_last)
    cam_opt = torch.optim.Adam(cam.parameters(), lr=1e-3)
    cgen = torch.Generator().manual_seed(args.seed)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), cam.state_dict().values(), strict=True))

    rows = []
    def cam_epoch() -> tuple[float, float, dict[str, float]]:
        _, c_t = train_epoch(cam, cam_opt, cx, cy, 128, cgen)
        tv = time.perf_counter()
        cam.eval()
        c_vl, c_acc, _ = evaluate(cam, cvx, cvy)
        c_t["validation"] = time.perf_counter() - tv
        return c_vl, c_acc, c_t

    for epoch in range(1, epochs + 1):
        c0 = time.process_time()
        (_, p_vl, p_acc, p_t), t_plain = harness.timed(lambda: plain_epoch(plain, plain_opt, train_loader, val_loader))
        cpu_plain, c0 = time.process_time() - c0, time.process_time()
        (c_vl, c_acc, c_t), t_cam = harness.timed(cam_epoch)
        cpu_cam = time.process_time() - c0
        rows.append((t_plain, t_cam, p_t, c_t, cpu_plain, cpu_cam))
        print(f"epoch {epoch}: plain {t_plain:6.2f}s (val acc {p_acc:.4f}, val loss {p_vl:.4f})   "
              f"camlens {t_cam:6.2f}s (val acc {c_acc:.4f}, val loss {c_vl:.4f})   ratio {t_plain / t_cam:.2f}x")

    med = statistics.median
    mp, mc = med(r[0] for r in rows), med(r[1] for r in rows)
    ratios = [r[0] / r[1] for r in rows]
    print(f"\nmedian epoch: plain {mp:.2f}s, camlens {mc:.2f}s -> camlens {mp / mc:.2f}x faster "
          f"(per-epoch ratios: {', '.join(f'{r:.2f}' for r in ratios)}; median {med(ratios):.2f}x)")
    cp, cc = med(r[4] for r in rows), med(r[5] for r in rows)
    print(f"median CPU time per epoch (all threads; less sensitive to other processes on the machine): "
          f"plain {cp:.2f}s, camlens {cc:.2f}s -> {cp / cc:.2f}x")
    print(f"final validation accuracy after {epochs} epochs: plain {p_acc:.4f}, camlens {c_acc:.4f}")
    print("\nwhere the time went (median seconds per epoch):")
    for key in ("data", "step", "val_loss_pass", "accuracy_pass"):
        print(f"  plain    {key:<14} {med(r[2][key] for r in rows):6.2f}")
    for key in ("batches", "step", "validation"):
        print(f"  camlens  {key:<14} {med(r[3][key] for r in rows):6.2f}")


if __name__ == "__main__":
    main()
