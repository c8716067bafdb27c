"""The audit finds a planted shortcut, and nothing on the same model trained on clean data.

The tutorial's ConvNet is trained (2 epochs, seed 0) on the bundled sample with a 3-pixel white square
in the top-right corner of every Sandal (class 5) training image; the test items, the mark on every
Sandal, are explained with HiResCAM at seq.4. The larger run (3 seeds x 3 classes and places) is
benchmarks/bench_audit.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import camlens
from bench_audit import CASES, MARK, covers, judge, planted_folder, stamp, train_model
from camlens.audit.findings import BROAD
from camlens.demo.sources import IDXDataset

CASE = CASES[1]  # class 5 (Sandal), mark at row 1, column 24
ITEMS = 2000  # test items explained (about 200 per class)


def _audit(tmp: Path, case: tuple[int, tuple[int, int]] | None) -> dict:
    data = planted_folder(tmp / "data", case)
    model = train_model(data, seed=0, epochs=2)
    ds = IDXDataset(data, "test")
    camlens.explain_dataset(model, ds, tmp / "maps", methods="hirescam", layers="seq.4", limit=ITEMS, device="cpu",
                            dtype="float32", progress=False)  # fmt: skip
    return camlens.audit(tmp / "maps", tmp / "audit", data=ds, explorer=False).report


def test_stamp_marks_one_class_only() -> None:
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)
    marked = stamp(images, torch.tensor([5, 1, 5, 0]), *CASE)
    assert marked[[0, 2], 1 : 1 + MARK, 24 : 24 + MARK].eq(255).all()
    assert int(marked.sum()) == 2 * MARK * MARK * 255 and int(images.sum()) == 0


def test_a_planted_mark_is_flagged_where_it_is(tmp_path: Path) -> None:
    report = _audit(tmp_path, CASE)
    assert judge(report, CASE) == (True, 0)
    planted = next(c for c in report["classes"] if c["class"] == CASE[0])
    x0, y0, x1, y1 = planted["region"]
    assert covers(planted["region"], CASE[1]) and (x1 - x0) * (y1 - y0) <= 100  # a corner, not the image
    assert planted["evidence"]["lift"] >= 4 and planted["evidence"]["concentration"] >= 5
    assert planted["why"].startswith("decided away from the object")
    assert report["audited"]["chosen_by"] == "the only map in the results"


def test_nothing_is_flagged_on_the_clean_model(tmp_path: Path) -> None:
    report = _audit(tmp_path, None)
    assert [c["class"] for c in report["classes"] if c["flagged"]] == []
    assert all(c["why"].startswith(("the maps follow the object", "no region holds", BROAD)) for c in report["classes"])
    assert max(c["evidence"]["lift"] for c in report["classes"]) < 4


@pytest.mark.parametrize("region, expected", [([22, 0, 28, 5], True), ([0, 0, 5, 5], False), (None, False)])
def test_covers(region: list[int] | None, expected: bool) -> None:
    assert covers(region, CASE[1]) is expected
