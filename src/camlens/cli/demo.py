"""``camlens demo``: train the tutorial's ConvNet (or reuse the cached run), explain it, write a report.

Steps: train on the bundled Fashion-MNIST sample with the tutorial's recipe
(or reuse ``<out>/checkpoint`` if it was trained with the same configuration),
pick a fixed set of test images (the first of each class, plus the first
misclassified ones), explain them at the three conv layers with one Grad-CAM
call, score Grad-CAM's and HiResCAM's maps at those layers against a random map on
``--eval-images`` test images (deletion, insertion, ROAD, confidence,
pointing, sanity checks; :mod:`camlens.evaluation.run`), and write figures and one
self-contained ``report.html``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from camlens.cli.train import add_data_arguments, add_recipe_arguments, resolve_data

__all__ = ["add_arguments", "pick_images", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="camlens-demo", metavar="DIR", help="output folder (default ./camlens-demo)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a matching checkpoint exists")
    parser.add_argument("--wrong", type=int, default=2, metavar="N", help="also show the first N misclassified images")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap (default jet)")
    parser.add_argument("--eval-images", type=int, default=100, metavar="N",
                        help="score Grad-CAM's maps on N test images for the report's evaluation section (0 skips it)")
    add_data_arguments(parser)
    add_recipe_arguments(parser)


def pick_images(labels: torch.Tensor, preds: torch.Tensor, num_classes: int, wrong: int) -> list[int]:
    """Indices: the first test image of each class (in class order), then the first ``wrong`` misclassified others."""
    chosen: list[int] = []
    for c in range(num_classes):
        hits = (labels == c).nonzero().flatten()
        if hits.numel():
            chosen.append(int(hits[0]))
    misses = [int(i) for i in (labels != preds).nonzero().flatten() if int(i) not in chosen]
    return chosen + misses[:wrong]


def _evaluation_section(model: torch.nn.Module, x_all: torch.Tensor, n: int) -> str:
    """The report's evaluation section: Grad-CAM and HiResCAM at the conv layers vs a random map, one seed.

    HiResCAM sits beside Grad-CAM because on this flatten -> linear head it is the exact per-position
    share of the logit, and it is the map that passes the faithfulness checks here (docs/evaluation.md).
    The ``n`` images are drawn from ``x_all`` by a permutation seeded with 0; sanity checks run on at
    most 50 of them.
    """
    from camlens.evaluation.run import evaluate
    from camlens.demo.models import ConvNet

    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(x_all.shape[0], generator=gen)[: min(n, x_all.shape[0])].to(x_all.device)
    ev = evaluate(model, x_all[idx], methods=["gradcam", "hirescam"], layers=list(ConvNet.conv_layers), seeds=(0,),
                  baselines=("random",), sanity_images=min(n, 50), n_boot=1000)
    return ev.html()


def _same_config(meta: dict[str, Any], want: dict[str, Any]) -> bool:
    return all(meta.get(k) == v for k, v in want.items())


def run(args: argparse.Namespace) -> int:
    from camlens.demo.checkpoint import load_checkpoint, read_meta
    from camlens.demo.data import CLASSES, load_split
    from camlens.errors import CamlensError, InputError
    from camlens.demo.models import ConvNet
    from camlens.demo.report import write_report
    from camlens._util.device import select_device
    from camlens.demo.train import _as_float, evaluate, train
    from camlens.viz.figures import check_colormap
    from camlens.cli.explain import explain_batch, title_for, write_figures

    t0 = time.perf_counter()
    check_colormap(args.colormap)
    if args.wrong < 0:
        raise InputError(f"--wrong {args.wrong} must be 0 or more")
    if args.eval_images < 0:
        raise InputError(f"--eval-images {args.eval_images} must be 0 (skip the evaluation) or more, e.g. 100")
    out = Path(args.out)
    ckpt = out / "checkpoint"
    data = resolve_data(args)
    device = select_device(args.device)

    # Would this run produce what the cached checkpoint holds? Then reuse it.
    _, val_lbl_all = load_split(data, "test")
    train_n = len(load_split(data, "train")[1])
    want = {
        "architecture": "convnet",
        "epochs": args.epochs,
        "recipe": {"optimizer": "Adam", "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs,
                   "seed": args.seed},
        "data": {"source": str(Path(data).resolve()) if data else "bundled-sample",
                 "train_images": min(train_n, args.train_limit or train_n),
                 "val_images": min(len(val_lbl_all), args.val_limit or len(val_lbl_all)), "val_split": "test"},
    }
    meta: dict[str, Any] | None = None
    if not args.retrain and (ckpt / "meta.json").is_file():
        try:
            if _same_config(read_meta(ckpt), want):
                model, meta = load_checkpoint(ckpt, device=device)
                print(f"reusing the checkpoint in {ckpt} (same configuration; --retrain to train again)")
        except CamlensError as e:
            print(f"not reusing {ckpt}: {e}")
            meta = None
    if meta is None:
        print(f"training the tutorial's ConvNet for {args.epochs} epoch(s) on "
              f"{want['data']['train_images']} images ({want['data']['source']}) ...")
        result = train(data=data, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       device=device, checkpoint=ckpt, train_limit=args.train_limit, val_limit=args.val_limit,
                       progress=not args.no_progress)
        model, meta = result.model, result.meta
    t_train = time.perf_counter() - t0

    images, labels = load_split(data, "test")
    if args.val_limit:
        images, labels = images[: args.val_limit], labels[: args.val_limit]
    x_all = _as_float(images, device)
    _, acc, preds = evaluate(model, x_all, labels.to(device))
    idx = pick_images(labels, preds.cpu(), len(CLASSES), args.wrong)
    x = images[torch.tensor(idx)].unsqueeze(1).float().div(255.0).to(device)
    ex = explain_batch(model, x, ConvNet.conv_layers, labels=labels[torch.tensor(idx)],
                       names=[f"test-{i:05d}" for i in idx])
    fig_dir = out / "figures"
    paths = write_figures(ex, CLASSES, fig_dir, cmap=args.colormap)
    wrong = int((ex.pred.cpu() != ex.labels).sum())
    summary = [
        f"test accuracy {acc:.4f} on {len(labels)} test images after {meta['epochs']} epoch(s) "
        f"({meta['data']['train_images']} training images, {meta['data']['source']})",
        f"explained {len(idx)} test images (one per class + {len(idx) - len(CLASSES)} misclassified; "
        f"{wrong} wrong in all) at {', '.join(ConvNet.conv_layers)} with one Grad-CAM call",
        f"figures: {fig_dir}/ (grid.png and one per image)",
    ]
    figures = [("all explained images: image and Grad-CAM overlay per layer", paths[-1].read_bytes())]
    figures += [(title_for(ex, i, CLASSES), p.read_bytes()) for i, p in enumerate(paths[: len(idx)])]
    sections = []
    if args.eval_images:
        t_eval = time.perf_counter()
        section = _evaluation_section(model, x_all, args.eval_images)
        sections.append(section)
        summary.append(
            f"evaluation: Grad-CAM and HiResCAM at {', '.join(ConvNet.conv_layers)} and a random map scored on "
            f"{min(args.eval_images, len(x_all))} test images in {time.perf_counter() - t_eval:.1f}s"
        )
    report = write_report(out / "report.html", title="camlens demo: Grad-CAM on Fashion-MNIST", summary=summary,
                          history=meta["history"], per_class=meta["per_class_accuracy"], class_names=CLASSES,
                          figures=figures, sections=sections)
    for line in summary:
        print(line)
    print(f"report: {report}")
    print(f"done in {time.perf_counter() - t0:.0f}s (training or loading {t_train:.0f}s)")
    return 0
