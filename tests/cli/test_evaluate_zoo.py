"""`camlens evaluate MODEL DATA` on a torchvision model with random weights and a flat folder of photos
(no class subfolders: the metrics explain the model's prediction and need no label)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from skimage import data as skdata

from camlens.cli import main

PHOTOS = ["chelsea", "cat", "coffee", "rocket"]


def test_evaluate_torchvision_resnet18_on_photos_ends_with_a_verdict(tmp_path: Path, capsys) -> None:
    (tmp_path / "photos").mkdir()
    for n in PHOTOS:
        Image.fromarray(getattr(skdata, n)()).save(tmp_path / "photos" / f"{n}.jpg")
    argv = ["evaluate", "torchvision:resnet18", "--weights", "none", str(tmp_path / "photos"), "--size", "72",
            "--crop", "64", "--methods", "gradcam", "hirescam", "cam", "--layers", "layer4", "--n-images", "4",
            "--seeds", "0", "--steps", "4", "--no-sanity", "--no-figures", "--no-progress", "--out",
            str(tmp_path / "ev"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("preprocess:") or "Verdict: " in out
    verdict = next(line for line in out.splitlines() if line.startswith("Verdict: "))
    saved = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert saved["config"]["model"] == "torchvision:resnet18"
    assert "centre crop 64x64" in saved["config"]["preprocess"]
    assert set(saved["config"]["methods"]) >= {"gradcam", "hirescam"}
    assert verdict.removeprefix("Verdict: ") == saved["verdict"]["headline"]
    assert saved["config"]["n_images"] == 4 and saved["config"]["accuracy_on_images"] is None  # no labels
