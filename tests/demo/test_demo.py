"""`camlens demo`: the same code path as the default run, on a small subset for one epoch."""

from __future__ import annotations

import base64
import io
import re

import pytest
import torch
from PIL import Image

from camlens.cli import main
from camlens.demo.checkpoint import read_meta
from camlens.demo.run import pick_images

QUICK = ["--epochs", "1", "--train-limit", "384", "--val-limit", "500", "--no-progress", "--device", "cpu"]


def test_pick_images_one_per_class_then_wrong_ones():
    labels = torch.tensor([2, 0, 0, 1, 2, 1, 0])
    preds = torch.tensor([2, 1, 0, 1, 0, 1, 2])
    # first of each class: 1 (class 0), 3 (class 1), 0 (class 2); wrong: 1 (already in), 4, 6
    assert pick_images(labels, preds, 3, wrong=1) == [1, 3, 0, 4]
    assert pick_images(labels, preds, 3, wrong=5) == [1, 3, 0, 4, 6]
    assert pick_images(labels, preds, 4, wrong=0) == [1, 3, 0]  # a class with no image is skipped


def test_demo_trains_explains_reports_then_reuses(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *QUICK, "--eval-images", "12"]) == 0
    text = capsys.readouterr().out
    meta = read_meta(out / "checkpoint")
    assert meta["epochs"] == 1 and meta["data"]["train_images"] == 384 and meta["data"]["val_images"] == 500
    acc = re.search(r"test accuracy (\d\.\d+) on 500 test images", text)
    assert acc and float(acc.group(1)) == pytest.approx(meta["accuracy"], abs=5e-5)
    assert f"report: {out / 'report.html'}" in text

    figs = sorted(p.name for p in (out / "figures").iterdir())
    n_images = len(figs) - 1
    assert "grid.png" in figs and n_images == 12  # 10 classes + 2 misclassified
    html = (out / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)  # self-contained
    assert len(srcs) == 2 + 1 + n_images + 2  # curve, per-class, grid, one per image; evaluation curves, sanity
    section = html[html.index('<section class="camlens-evaluation">') :]
    assert "12 test images, 1 seed(s)" in section and "<td>random</td>" in section
    assert "gradcam@seq.4" in section and "hirescam@seq.4" in section
    assert "evaluation: Grad-CAM and HiResCAM at seq.0, seq.2, seq.4 and a random map scored on 12 test images" in text
    for s in srcs:
        with Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) as im:
            assert im.format == "PNG"
    assert "<td>1</td>" in html and f"{meta['history'][0]['val_accuracy']:.4f}" in html
    assert "http" not in html

    assert main(["demo", "--out", str(out), *QUICK, "--eval-images", "0"]) == 0
    assert "reusing the checkpoint" in capsys.readouterr().out
    assert "camlens-evaluation" not in (out / "report.html").read_text()  # 0 skips the section
    # another configuration: trains again
    assert main(["demo", "--out", str(out), *QUICK, "--seed", "5", "--eval-images", "0"]) == 0
    assert "training the tutorial's ConvNet" in capsys.readouterr().out
    assert read_meta(out / "checkpoint")["recipe"]["seed"] == 5


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--wrong", "-1"], "--wrong -1 must be 0 or more"),
        (["--eval-images", "-3"], "--eval-images -3 must be 0 (skip the evaluation) or more"),
        (["--colormap", "nope"], "colormap='nope' is not a matplotlib colormap"),
        (["--batch-size", "0"], "batch_size=0 must be a positive int"),
        (["--full", "--data", "x"], "--full and --data 'x' both given"),
    ],
)
def test_demo_bad_input(tmp_path, capsys, argv, match):
    assert main(["demo", "--out", str(tmp_path / "d"), *QUICK, *argv]) == 1
    assert match in capsys.readouterr().err
