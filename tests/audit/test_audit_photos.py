"""The audit on an explain-dataset run over a folder of photos of different sizes (skimage.data).

The photos are read back as the run read them (its recorded resize, crop and channels), so the audit
sees pictures that line up with the maps, and the explorer lists each item's file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image
from skimage import data as skdata

import camlens
from camlens.preprocess import Preprocess
from testmodels import SmallResNet, seeded

PHOTOS = {"cat": "chelsea", "coffee": "coffee", "space": "astronaut"}
SIZES = [(45, 30), (40, 40), (60, 33), (31, 52)]


def _folder(root: Path) -> list[str]:
    files = []
    for cls, photo in PHOTOS.items():
        (root / cls).mkdir(parents=True)
        for j, size in enumerate(SIZES):
            Image.fromarray(getattr(skdata, photo)()).convert("RGB").resize(size).save(root / cls / f"{photo}{j}.jpg")
            files.append(f"{cls}/{photo}{j}.jpg")
    return sorted(files)


def test_audit_of_a_photo_run_reads_the_photos_as_the_run_did_and_lists_their_files(tmp_path: Path) -> None:
    files = _folder(tmp_path / "photos")
    model = seeded(lambda: SmallResNet(num_classes=3))
    pre = Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    camlens.explain_dataset(model, str(tmp_path / "photos"), tmp_path / "maps", methods="gradcam", layers="layer3",
                            preprocess=pre, progress=False, device="cpu")  # fmt: skip
    report = camlens.audit(tmp_path / "maps", tmp_path / "audit").report
    assert [c["name"] for c in report["classes"]] == ["cat", "coffee", "space"]
    assert [c["n"] for c in report["classes"]] == [4, 4, 4]
    text = (tmp_path / "audit" / "data.js").read_text()
    explorer = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert explorer["has_images"] is True
    assert sorted(explorer["items"]["path"]) == files
    # the picture the audit drew for an item is the photo at the run's 32x32, not the file's own size
    first = sorted((tmp_path / "audit" / "items").rglob("*.png"))[0]
    with Image.open(first) as im:
        assert im.height == 32
    assert torch.isfinite(torch.tensor([c["spread"]["border"] for c in report["classes"]])).all()


def test_an_audit_folder_inside_the_photo_folder_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    from camlens.cli import main

    files = _folder(tmp_path / "photos")
    model = seeded(lambda: SmallResNet(num_classes=3))
    pre = Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    camlens.explain_dataset(model, str(tmp_path / "photos"), tmp_path / "maps", methods="gradcam", layers="layer3",
                            preprocess=pre, progress=False, device="cpu")  # fmt: skip
    photos = tmp_path / "photos"
    # the data folder the results name, and the one given with --data (also with --no-images: the next run reads it)
    for out, more in ((photos / "audit", []), (photos / "cat" / "a", ["--data", str(photos)]),
                      (photos, ["--no-images"])):  # fmt: skip
        assert main(["audit", str(tmp_path / "maps"), "--out", str(out), *more]) == 1
        err = capsys.readouterr().err
        assert f"InputError: out={str(out)!r} (--out) is inside the data folder {str(photos)!r}" in err
        assert "choose an audit folder outside it" in err
    assert sorted(str(p.relative_to(photos)) for p in photos.rglob("*") if p.is_file()) == files  # nothing written
    assert main(["audit", str(tmp_path / "maps"), "--out", str(tmp_path / "audit"), "--no-explorer"]) == 0
