"""The demo: train the tutorial's ConvNet (or reuse the cached run), explain it, write a report.

Steps: train on the bundled Fashion-MNIST sample with the tutorial's recipe
(or reuse ``<out>/checkpoint`` if it was trained with the same configuration),
pick a fixed set of test images (the first of each class, plus the first
misclassified ones), explain them at the three conv layers with one Grad-CAM
call, score Grad-CAM's and HiResCAM's maps at those layers against a random map on
``eval_images`` test images (deletion, insertion, ROAD, confidence,
pointing, sanity checks; :mod:`camlens.evaluation.run`), and write figures and one
self-contained ``report.html``.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from camlens.demo.models import ConvNet
from camlens.errors import CamlensError, InputError

__all__ = ["DemoResult", "pick_images", "run_demo"]

#: the layers the demo explains: the ConvNet's three convolutions, first to last.
LAYERS = list(ConvNet.conv_layers)


@dataclass
class DemoResult:
    """What :func:`run_demo` did and wrote."""

    report: Path
    checkpoint: Path
    figures: list[Path]
    accuracy: float
    #: whether the cached checkpoint was reused instead of training.
    reused: bool
    #: the report's summary, one line per fact (also logged).
    summary: list[str] = field(default_factory=list)


def pick_images(labels: Tensor, preds: Tensor, num_classes: int, wrong: int) -> list[int]:
    """Indices: the first test image of each class (in class order), then the first ``wrong`` misclassified others."""
    chosen: list[int] = []
    for c in range(num_classes):
        hits = (labels == c).nonzero().flatten()
        if hits.numel():
            chosen.append(int(hits[0]))
    misses = [int(i) for i in (labels != preds).nonzero().flatten() if int(i) not in chosen]
    return chosen + misses[:wrong]


def _evaluation_section(model: nn.Module, x_all: Tensor, n: int) -> str:
    """The report's evaluation section: Grad-CAM and HiResCAM at the conv layers vs a random map, one seed.

    HiResCAM sits beside Grad-CAM because on this flatten -> linear head it is the exact per-position
    share of the logit, and it is the map that passes the faithfulness checks here (docs/evaluation.md).
    The ``n`` images are drawn from ``x_all`` by a permutation seeded with 0; sanity checks run on at
    most 50 of them.
    """
    from camlens.evaluation.run import evaluate

    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(x_all.shape[0], generator=gen)[: min(n, x_all.shape[0])].to(x_all.device)
    ev = evaluate(model, x_all[idx], methods=["gradcam", "hirescam"], layers=LAYERS, seeds=(0,),
                  baselines=("random",), sanity_images=min(n, 50), n_boot=1000)  # fmt: skip
    return ev.html()


def _trained(
    ckpt: Path, data: str | None, recipe: dict[str, Any], retrain: bool, device: torch.device, progress: bool,
    log: Callable[[str], None],
) -> tuple[nn.Module, dict[str, Any], bool]:  # fmt: skip
    """``(model, meta, reused)``: the checkpoint in ``ckpt`` if it was trained with this configuration, else a new one.

    ``recipe`` holds ``epochs``, ``batch_size``, ``lr``, ``seed``, ``train_limit``, ``val_limit``.
    """
    from camlens.demo.checkpoint import load_checkpoint, read_meta
    from camlens.demo.data import load_split
    from camlens.demo.train import train

    val_n = len(load_split(data, "test")[1])
    train_n = len(load_split(data, "train")[1])
    want = {
        "architecture": "convnet",
        "epochs": recipe["epochs"],
        "recipe": {"optimizer": "Adam", "lr": recipe["lr"], "batch_size": recipe["batch_size"],
                   "epochs": recipe["epochs"], "seed": recipe["seed"]},
        "data": {"source": str(Path(data).resolve()) if data else "bundled-sample",
                 "train_images": min(train_n, recipe["train_limit"] or train_n),
                 "val_images": min(val_n, recipe["val_limit"] or val_n), "val_split": "test"},
    }  # fmt: skip
    if not retrain and (ckpt / "meta.json").is_file():
        try:
            meta = read_meta(ckpt)
            if all(meta.get(k) == v for k, v in want.items()):
                model, meta = load_checkpoint(ckpt, device=device)
                log(f"reusing the checkpoint in {ckpt} (same configuration; --retrain to train again)")
                return model, meta, True
        except CamlensError as e:
            log(f"not reusing {ckpt}: {e}")
    log(f"training the tutorial's ConvNet for {recipe['epochs']} epoch(s) on "
        f"{want['data']['train_images']} images ({want['data']['source']}) ...")  # fmt: skip
    result = train(data=data, device=device, checkpoint=ckpt, progress=progress, log=log, **recipe)
    return result.model, result.meta, False


def run_demo(
    out: str | Path = "camlens-demo",
    *,
    data: str | None = None,
    retrain: bool = False,
    wrong: int = 2,
    colormap: str = "jet",
    eval_images: int = 100,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    train_limit: int | None = None,
    val_limit: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Train (or reuse), explain the chosen test images, evaluate, and write ``<out>/report.html``.

    Args:
        out: the output folder (``checkpoint/``, ``figures/``, ``report.html``).
        data: a folder of the four Fashion-MNIST IDX files; ``None`` for the bundled sample.
        retrain: train again even if ``<out>/checkpoint`` matches the configuration.
        wrong: also explain the first ``wrong`` misclassified test images.
        colormap: a matplotlib colormap name.
        eval_images: test images for the report's evaluation section (0 skips it).
        epochs, batch_size, lr, seed, train_limit, val_limit: the training recipe
            (see :func:`camlens.demo.train.train`).
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a device.
        progress: tqdm bars while training.
        log: called with each line of progress and summary.

    Raises:
        InputError: a bad argument, or an ``out`` that is a file or cannot be written
            (checked before any work).
        FolderBusyError: another demo is writing ``out``.
        CamlensError: a write failed (disk full, permission); the message says what was kept.
    """
    from camlens._util.device import select_device
    from camlens._util.lock import folder_lock
    from camlens.demo.checkpoint import prepare_output_folder
    from camlens.demo.train import check_recipe
    from camlens.viz.figures import check_colormap

    t0 = time.perf_counter()
    check_colormap(colormap)
    if wrong < 0:
        raise InputError(f"--wrong {wrong} must be 0 or more")
    if eval_images < 0:
        raise InputError(f"--eval-images {eval_images} must be 0 (skip the evaluation) or more, e.g. 100")
    check_recipe(epochs, batch_size, lr, seed, train_limit, val_limit)
    dev = select_device(device)
    out = prepare_output_folder(out, "--out")
    recipe = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "train_limit": train_limit,
              "val_limit": val_limit}  # fmt: skip
    with folder_lock(out, "camlens demo"):  # one demo per folder: a second one gets FolderBusyError now
        model, meta, reused = _trained(out / "checkpoint", data, recipe, retrain, dev, progress, log)
        t_train = time.perf_counter() - t0
        with _write_errors(out, reused):
            result = _explain_and_report(model, meta, out, data, val_limit, wrong, colormap, eval_images, log)
    log(f"done in {time.perf_counter() - t0:.0f}s (training or loading {t_train:.0f}s)")
    return replace(result, reused=reused)


#: the errors of a write that failed for want of space or permission.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


@contextmanager
def _write_errors(out: Path, reused: bool) -> Iterator[None]:
    """A failed figure or report write (disk full, read-only) as a CamlensError that says what was kept."""
    try:
        yield
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        how = "reused" if reused else "just trained"
        raise CamlensError(
            f"could not write the demo's figures or report in {out}: {e.strerror or e} "
            f"({errno.errorcode.get(e.errno or 0, 'OSError')}); kept: the {how} checkpoint in {out / 'checkpoint'} "
            "and any earlier report.html (it is replaced only when the new one is complete). Free some space or "
            "fix the folder's permissions and run the demo again (it reuses the checkpoint)"
        ) from None


def _explain_and_report(
    model: nn.Module, meta: dict[str, Any], out: Path, data: str | None, val_limit: int | None, wrong: int,
    colormap: str, eval_images: int, log: Callable[[str], None],
) -> DemoResult:  # fmt: skip
    """Explain the chosen test images at the three conv layers, evaluate, write the figures and the report."""
    from camlens.demo.data import CLASSES, load_split
    from camlens.demo.report import write_report
    from camlens.demo.train import _as_float, evaluate
    from camlens.viz.explained import explain_batch, title_for, write_figures

    device = next(model.parameters()).device
    images, labels = load_split(data, "test")
    if val_limit:
        images, labels = images[:val_limit], labels[:val_limit]
    x_all = _as_float(images, device)
    _, acc, preds = evaluate(model, x_all, labels.to(device))
    idx = pick_images(labels, preds.cpu(), len(CLASSES), wrong)
    x = images[torch.tensor(idx)].unsqueeze(1).float().div(255.0).to(device)
    ex = explain_batch(model, x, LAYERS, labels=labels[torch.tensor(idx)], names=[f"test-{i:05d}" for i in idx])
    fig_dir = out / "figures"
    paths = write_figures(ex, CLASSES, fig_dir, cmap=colormap)
    summary = [
        f"test accuracy {acc:.4f} on {len(labels)} test images after {meta['epochs']} epoch(s) "
        f"({meta['data']['train_images']} training images, {meta['data']['source']})",
        f"explained {len(idx)} test images (one per class + {len(idx) - len(CLASSES)} misclassified; "
        f"{int((ex.pred.cpu() != ex.labels).sum())} wrong in all) at {', '.join(LAYERS)} with one Grad-CAM call",
        f"figures: {fig_dir}/ (grid.png and one per image)",
    ]
    figures = [("all explained images: image and Grad-CAM overlay per layer", paths[-1].read_bytes())]
    figures += [(title_for(ex, i, CLASSES), p.read_bytes()) for i, p in enumerate(paths[: len(idx)])]
    sections = []
    if eval_images:
        t_eval = time.perf_counter()
        sections.append(_evaluation_section(model, x_all, eval_images))
        summary.append(
            f"evaluation: Grad-CAM and HiResCAM at {', '.join(LAYERS)} and a random map scored on "
            f"{min(eval_images, len(x_all))} test images in {time.perf_counter() - t_eval:.1f}s"
        )
    report = write_report(out / "report.html", title="camlens demo: Grad-CAM on Fashion-MNIST", summary=summary,
                          history=meta["history"], per_class=meta["per_class_accuracy"], class_names=CLASSES,
                          figures=figures, sections=sections)  # fmt: skip
    for line in summary:
        log(line)
    log(f"report: {report}")
    return DemoResult(report=report, checkpoint=out / "checkpoint", figures=paths, accuracy=acc, reused=False,
                      summary=summary)  # fmt: skip
