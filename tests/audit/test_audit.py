"""camlens.audit: the clusters, the judgement of a class, the report's shape, the files, the command."""

from __future__ import annotations

import errno
import json
import struct
import zlib
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import camlens
from camlens.audit.clusters import cluster_maps
from camlens.audit.collect import Collected, object_mask
from camlens.audit.findings import BROAD, MIN_CONCENTRATION, MIN_LIFT, judge_class
from camlens.audit.fixed import ImageMoments
from camlens.audit.png import encode_png
from camlens.audit.report import dumps
from camlens.audit.spread import class_mean, hot_regions, item_stats, region_evidence, widen
from camlens.cli import main
from camlens.errors import CamlensError, InputError


def _blobs(n: int, centre: tuple[float, float], size: int = 16, width: float = 2.0, seed: int = 0) -> torch.Tensor:
    """``n`` maps ``(n, size, size)``: a Gaussian blob near ``centre`` (jittered by a pixel) plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    c = torch.tensor(centre) + torch.randn(n, 2, generator=g)
    m = torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2) / (2 * width**2))
    m = m + 0.02 * torch.rand(n, size, size, generator=g)
    return m / m.sum(dim=(1, 2), keepdim=True)


def test_spectral_clustering_finds_the_groups_and_their_number() -> None:
    maps = torch.cat([_blobs(40, (3, 3)), _blobs(30, (12, 12), seed=1), _blobs(25, (3, 12), seed=2)])
    result = cluster_maps(maps)
    assert result.k == 3
    truth = torch.cat([torch.full((40,), 0), torch.full((30,), 1), torch.full((25,), 2)])
    # clusters are numbered by falling size, so they match the groups as built
    assert torch.equal(result.labels, truth)
    two = cluster_maps(torch.cat([_blobs(50, (3, 3)), _blobs(20, (12, 12), seed=3)]))
    assert two.k == 2 and two.labels.bincount().tolist() == [50, 20]


def test_spectral_clustering_of_few_maps_is_one_cluster() -> None:
    result = cluster_maps(_blobs(5, (3, 3)))
    assert result.k == 1 and result.labels.tolist() == [0] * 5


def _collected(maps: torch.Tensor, objects: torch.Tensor | None, input_size: tuple[int, int] | None) -> Collected:
    n = maps.shape[0]
    zeros = torch.zeros(n, dtype=torch.long)
    return Collected(ids=torch.arange(n), labels=zeros, preds=zeros, targets=zeros, probs=torch.ones(n),
                     maps=maps, empty=torch.zeros(n, dtype=torch.bool), objects=objects, inside=None,
                     input_size=input_size, map_size=tuple(maps.shape[-2:]), mean_images={})  # fmt: skip


def _centre_objects(n: int, size: int = 16) -> torch.Tensor:
    obj = torch.zeros(n, size, size)
    obj[:, 4:12, 4:12] = 1.0
    return obj


def test_a_class_whose_maps_sit_off_the_object_is_flagged_with_that_box() -> None:
    # maps on a corner blob at (1.5, 13.5) of a 16x16 grid; the object is the centre square; inputs 32x32
    c = _collected(_blobs(60, (1.5, 13.5), width=1.0), _centre_objects(60), (32, 32))
    rows = torch.arange(60)
    flagged, region, why = judge_class(c, rows, class_mean(c, rows))
    assert flagged and region is not None and "away from the object" in why
    x0, y0, x1, y1 = region.box(c)
    assert (x0, y0) == (2 * region.cells[2], 2 * region.cells[0])  # grid cells are 2 input pixels
    assert x0 <= 27 < x1 and y0 <= 3 < y1  # the blob's centre, in input pixels
    # the box (rows 0-4, columns 11-15) reaches one cell, (4, 11), of the object's 64
    assert region.cells == (0, 5, 11, 16) and region.object_share == pytest.approx(1 / 64)
    assert region.lift is not None and region.lift >= MIN_LIFT and region.concentration >= MIN_CONCENTRATION
    assert region.mass > 0.5 and region.consistency > 0.9


def test_a_class_whose_maps_follow_the_object_is_not_flagged() -> None:
    c = _collected(_blobs(60, (7.5, 7.5), width=2.0), _centre_objects(60), (16, 16))
    rows = torch.arange(60)
    flagged, region, why = judge_class(c, rows, class_mean(c, rows))
    assert not flagged and region is not None and region.lift is not None and region.lift < 2
    assert "follow the object" in why


def test_a_broad_region_off_the_object_is_a_finding_not_a_flag() -> None:
    # every map spread evenly over the top quarter (rows 0-3 of 16), above the centre object (rows 4-11)
    maps = torch.zeros(60, 16, 16)
    maps[:, :4] = 1 / 64
    c = _collected(maps, _centre_objects(60), (16, 16))
    rows = torch.arange(60)
    flagged, region, why = judge_class(c, rows, class_mean(c, rows))
    # the box, widened by a cell: rows 0-4, all columns (80 of 256 cells), one row of the object's 8
    assert region is not None and region.cells == (0, 5, 0, 16) and region.hot == (0, 4, 0, 16)
    assert region.mass == pytest.approx(1.0) and region.lift == pytest.approx(8.0)
    # the concentration is the hot cells' own: all the mass on 64 of the 256 cells
    assert region.concentration == pytest.approx(256 / 64) and region.concentration < MIN_CONCENTRATION
    assert not flagged and why.startswith(BROAD)


def test_without_images_nothing_is_judged() -> None:
    c = _collected(_blobs(60, (1.5, 13.5), width=1.0), None, None)
    rows = torch.arange(60)
    flagged, _, why = judge_class(c, rows, class_mean(c, rows))
    assert not flagged and why.startswith("not judged: the images were not read")


def test_item_stats_on_a_hand_made_map() -> None:
    maps = torch.zeros(2, 8, 8)
    maps[0, 0, 0] = 0.75  # top-left corner, on the border
    maps[0, 4, 4] = 0.25
    maps[1] = 1 / 64  # uniform
    stats = item_stats(_collected(maps, None, (16, 16)))
    assert stats["top_left"][0] == 0.75 and stats["border"][0] == 0.75 and stats["bottom_right"][0] == 0
    assert stats["border"][1] == pytest.approx(28 / 64) and stats["top_left"][1] == pytest.approx(4 / 64)
    assert (stats["peak_x"][0], stats["peak_y"][0]) == (1.0, 1.0)  # centre of cell (0, 0) in input pixels
    assert stats["half_mass_area"][0] == pytest.approx(1 / 64)
    assert stats["half_mass_area"][1] == pytest.approx(32 / 64)


def test_hot_regions_are_the_hot_cells_boxes_ordered_by_mass_and_widened_by_a_cell() -> None:
    mean = torch.zeros(10, 10)
    mean[0, 0] = 1.0
    mean[5:7, 5:7] = 0.6
    assert hot_regions(mean) == [(5, 7, 5, 7), (0, 1, 0, 1)]
    assert [widen(b, (10, 10)) for b in hot_regions(mean)] == [(4, 8, 4, 8), (0, 2, 0, 2)]


def test_a_one_cell_spot_on_a_coarse_grid_keeps_its_concentration() -> None:
    # 6 x 6 maps (a photo model's last blocks), 40 % of the mass on cell (2, 3), the rest uniform; no object there
    maps = torch.full((20, 6, 6), 0.6 / 35)
    maps[:, 2, 3] = 0.4
    objects = torch.zeros(20, 6, 6)
    objects[:, :, 0] = 1.0  # the object: the left column
    c = _collected(maps, objects, (96, 96))
    rows = torch.arange(20)
    region = region_evidence(c, rows, class_mean(c, rows), hot_regions(class_mean(c, rows))[0])
    assert region.hot == (2, 3, 3, 4) and region.cells == (1, 4, 2, 5)
    # the hot cell: 0.4 of the mass on 1/36 of the image; widened to 3 x 3 it would be (0.4 + 8 * 0.6 / 35) * 4
    assert region.concentration == pytest.approx(0.4 * 36)
    assert region.mass == pytest.approx(0.4 + 8 * 0.6 / 35) and region.area == pytest.approx(9 / 36)
    assert region.box(c) == [32, 16, 80, 64]  # the widened box, 16 input pixels a cell


def _marked_moments(n: int = 40) -> ImageMoments:
    """Moments of 32 x 32 images of classes 0 and 1: a black background, an object of noise (0.3-0.5) in rows 8-23;
    class 0 has a 3 x 4 mark of 1.0 at rows 2-4, columns 26-29; class 1's object also fills rows 24-30, where
    class 0 is always black (the absence of its object there, not a mark)."""
    from camlens.audit.collect import object_mask

    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2 * n, 1, 32, 32)
    x[:, :, 8:24, 4:28] = 0.3 + 0.2 * torch.rand(2 * n, 1, 16, 24, generator=g)
    labels = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    x[:n, :, 2:5, 26:30] = 1.0
    x[n:, :, 24:31, 4:28] = 0.3 + 0.2 * torch.rand(n, 1, 7, 24, generator=g)
    moments = ImageMoments()
    for part in (slice(0, 50), slice(50, 2 * n)):  # in two batches, as the audit reads them
        moments.add(x[part], labels[part], object_mask(x[part]))
    return moments


def test_a_fixed_pattern_is_found_whole_and_the_absence_of_the_object_is_not_one() -> None:
    moments = _marked_moments()
    fixed = moments.fixed(0)
    assert fixed is not None and int(fixed.sum()) == 12  # the mark's pixels; not rows 24-30 (black)
    assert moments.pattern(0, [20, 0, 32, 8]) == ([26, 2, 30, 5], 12)
    # a box that holds one column of the mark gives the whole mark; one that misses it, nothing
    assert moments.pattern(0, [29, 4, 31, 6]) == ([26, 2, 30, 5], 12)
    assert moments.pattern(0, [0, 0, 20, 20]) is None
    assert moments.pattern(0, [0, 20, 32, 32]) is None and moments.pattern(1, [0, 0, 32, 32]) is None


def test_a_flagged_class_reports_its_fixed_pattern_as_the_box() -> None:
    # the maps of test_a_class_whose_maps_sit_off_the_object...; the images hold a mark next to the blob's centre
    c = _collected(_blobs(60, (1.5, 13.5), width=1.0), _centre_objects(60), (32, 32))
    c.moments = _marked_moments()
    rows = torch.arange(60)
    flagged, region, why = judge_class(c, rows, class_mean(c, rows))
    assert flagged and region is not None
    assert region.map_box(c) == [22, 0, 32, 10] and region.box(c) == [26, 2, 30, 5] and region.pattern_pixels == 12
    assert "fixed pattern there (12 pixels" in why and "[22, 0, 32, 10]" in why


def test_object_mask_is_what_differs_from_the_frame() -> None:
    x = torch.full((1, 3, 10, 10), 0.5)
    x[0, :, 3:6, 3:6] = 0.9
    assert torch.equal(object_mask(x)[0], x[0, 0] > 0.6)


def _read_png(data: bytes) -> tuple[int, int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h, _depth, colour = struct.unpack(">IIBB", data[16:26])
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    return w, h, colour, zlib.decompress(idat)


def test_png_holds_the_pixels() -> None:
    pixels = torch.arange(2 * 3 * 3, dtype=torch.uint8).reshape(2, 3, 3).numpy()
    w, h, colour, raw = _read_png(encode_png(pixels))
    assert (w, h, colour) == (3, 2, 2)
    assert raw == b"\x00" + pixels[0].tobytes() + b"\x00" + pixels[1].tobytes()


def test_json_is_strict_and_safe_in_a_script() -> None:
    text = dumps({"name": "</script><script>alert(1)</script>", "v": float("nan"), "s": "a\u2028b & c"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"name": "</script><script>alert(1)</script>", "v": None, "s": "a\u2028b & c"}


def test_the_report_has_the_issues_shape(small_audit) -> None:
    report = json.loads((small_audit.out / "audit.json").read_text())
    assert report["audited"] == {"map": "hirescam/seq.4", "method": "hirescam", "layer": "seq.4", "chosen_by": "user",
                                 "maps_in_results": ["gradcam/seq.4", "hirescam/seq.4"]}  # fmt: skip
    assert report["n_items"] == 300 and report["input_size"] == [28, 28] and "fashion-mnist:test" in report["images"]
    assert sum(c["n"] for c in report["classes"]) == 300
    for c in report["classes"]:
        assert isinstance(c["class"], int) and isinstance(c["name"], str) and isinstance(c["why"], str)
        assert isinstance(c["flagged"], bool) and (c["region"] is None) == (not c["flagged"])
        members = [i for k in c["clusters"] for i in k["members"]]
        assert len(members) == len(set(members)) == c["n"] - c["empty_maps"]
        assert [k["size"] for k in c["clusters"]] == sorted((k["size"] for k in c["clusters"]), reverse=True)
        assert (small_audit.out / c["figure"]).is_file()
        assert all((small_audit.out / k["prototype"]).is_file() for k in c["clusters"])
        assert set(c["spread"]) >= {"object", "border", "top_left", "top_right", "bottom_left", "bottom_right"}
    names = {c["class"]: c["name"] for c in report["classes"]}
    assert names[9] == "Ankle boot"
    # one strip per item: the image and the two maps side by side, 28 pixels each
    w, h, colour, _ = _read_png((small_audit.out / "items" / "0" / "299.png").read_bytes())
    assert (w, h, colour) == (3 * 28, 28, 2)


def test_the_map_audited_is_chosen_and_recorded(small_run: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"several maps \['gradcam/seq.4', 'hirescam/seq.4'\]"):
        camlens.audit(small_run, tmp_path / "a")
    with pytest.raises(InputError, match="no such map"):
        camlens.audit(small_run, tmp_path / "a", method="scorecam")
    r = camlens.audit(small_run, tmp_path / "b", method="gradcam", layer="seq.4", reason="evaluation verdict: x",
                      explorer=False, data=False)  # fmt: skip
    assert r.report["audited"]["chosen_by"] == "evaluation verdict: x" and r.report["audited"]["map"] == "gradcam/seq.4"
    assert r.report["images"] == "not read (data=False)" and not (tmp_path / "b" / "index.html").exists()
    assert all(c["why"].startswith("not judged") and not c["flagged"] for c in r.report["classes"])
    assert "nothing judged: images not read (data=False)" in str(r)


class _Hostile(Dataset):
    """Fashion-MNIST items under class names that are HTML."""

    def __init__(self) -> None:
        from camlens.demo.sources import IDXDataset

        self.inner = IDXDataset(None, "test")
        self.classes = [f"<img src=x onerror=alert({i})></script>" for i in range(10)]

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.inner[i]


def test_every_text_is_escaped_in_the_explorer(tmp_path: Path) -> None:
    from camlens.demo.models import build_model

    data = _Hostile()
    camlens.explain_dataset(build_model("convnet").eval(), data, tmp_path / "maps", methods="hirescam",
                            layers="seq.4", device="cpu", progress=False)  # fmt: skip
    r = camlens.audit(tmp_path / "maps", tmp_path / "audit", data=data)
    assert r.report["audited"]["chosen_by"] == "the only map in the results"
    assert r.report["classes"][0]["name"] == data.classes[r.report["classes"][0]["class"]]
    for name in ("index.html", "data.js"):
        text = (tmp_path / "audit" / name).read_text()
        assert "<img src=x" not in text and "</script><" not in text.replace("</script>\n<script", "")


def test_the_command(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", str(small_run), "--out", str(tmp_path / "a"), "--method", "hirescam", "--no-explorer"]) == 0
    out = capsys.readouterr().out
    assert "audited hirescam/seq.4 on 300 items (chosen by: user)" in out
    assert (tmp_path / "a" / "audit.json").is_file() and not (tmp_path / "a" / "index.html").exists()
    assert main(["audit", str(small_run), "--out", str(tmp_path / "b")]) == 1
    assert "choose the one to audit" in capsys.readouterr().err


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` but the lock (which holds the process id), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".camlens.lock"}  # fmt: skip


def test_the_audit_writes_the_same_files_on_any_number_of_threads(small_run: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    try:
        for n in (1, 3):  # 3: the pictures are made by three threads, batches finishing in any order
            torch.set_num_threads(n)
            camlens.audit(small_run, tmp_path / str(n), method="hirescam")
            assert torch.get_num_threads() == n  # the audit gives the threads back as it found them
    finally:
        torch.set_num_threads(before)
    one, three = _files(tmp_path / "1"), _files(tmp_path / "3")
    assert len([k for k in one if k.startswith("items")]) == 300
    assert one.keys() == three.keys()
    assert [k for k in one if one[k] != three[k]] == []


def test_a_picture_that_cannot_be_written_fails_the_audit_and_leaves_nothing_half_made(
    small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from camlens.audit import pictures

    def full_disk(pixels, level=6):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pictures, "encode_png", full_disk)
    before = torch.get_num_threads()
    with pytest.raises(CamlensError, match=r"cannot write a file in .*: the disk is full"):
        camlens.audit(small_run, tmp_path / "a", method="hirescam")
    assert torch.get_num_threads() == before
    assert not (tmp_path / "a" / "items").exists() and not list((tmp_path / "a").glob(".items.*"))
