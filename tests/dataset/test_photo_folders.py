"""explain-dataset on a class-per-folder set of real photos of different sizes and modes (skimage.data).

RGB JPEG, grayscale PNG and RGBA PNG photos, no two classes alike in size; a small ResNet whose
average pool takes any size. Checked: the maps against the engine on the same preprocessed inputs
(batched at a fixed size, one by one at the photos' own sizes), the paths and geometry kept per item,
``table()`` against the shards, ``--figures`` through the CLI, and resume with the preprocessing recorded.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from torch.utils.data import Dataset

import camlens
from camlens.cli import main
from camlens.dataset import open_results
from camlens.dataset.writer import ShardWriter
from camlens.errors import DataError, InputError
from camlens.preprocess import Preprocess
from testmodels import SmallResNet, seeded

LAYER = "layer3"
#: class -> [(file name, skimage photo, (width, height), Pillow mode)]
PHOTOS = {
    "cat": [("chelsea.jpg", "chelsea", (45, 30), "RGB"), ("chelsea-gray.png", "chelsea", (40, 27), "L"),
            ("chelsea-rgba.png", "chelsea", (50, 34), "RGBA")],
    "coffee": [("coffee.jpg", "coffee", (60, 40), "RGB"), ("coffee-gray.png", "coffee", (40, 27), "L"),
               ("coffee-rgba.png", "coffee", (36, 24), "RGBA")],
    "space": [("astronaut.jpg", "astronaut", (33, 33), "RGB"), ("moon.png", "moon", (41, 41), "L"),
              ("rocket-rgba.png", "rocket", (64, 43), "RGBA")],
}  # fmt: skip
FILES = [f"{c}/{name}" for c in sorted(PHOTOS) for name, *_ in sorted(PHOTOS[c])]


def _write(path, photo: str, size: tuple[int, int], mode: str) -> None:
    arr = getattr(skdata, photo)()
    im = Image.fromarray(arr).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        alpha = np.linspace(60, 255, size[0] * size[1]).astype(np.uint8).reshape(size[1], size[0])
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray(alpha))
    im.save(path, quality=90) if path.suffix == ".jpg" else im.save(path)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for cls, files in PHOTOS.items():
        (root / cls).mkdir()
        for name, photo, size, mode in files:
            _write(root / cls / name, photo, size, mode)
    return root


@pytest.fixture(scope="module")
def model() -> SmallResNet:
    """Seeded, with the head scaled so that the maps lie in float16's normal range (not its subnormals)."""
    model = seeded(lambda: SmallResNet(num_classes=3))
    with torch.no_grad():
        model.fc.weight.mul_(1000.0)
    return model


def engine(model, x: torch.Tensor, target=None):
    return camlens.GradCAM(model, LAYER, upsample=False, normalize=False)(x, target=target)


def close(stored: torch.Tensor, want: torch.Tensor) -> None:
    """Stored float16 maps against the engine's: the rounding, and a batch's other convolution kernels."""
    torch.testing.assert_close(stored, want.half().float(), atol=2e-3 * float(want.abs().max()), rtol=2e-3)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, photos, model):
    """The photos at their own sizes (the default preprocessing of a module: RGB, no resize), 4 per batch."""
    out = tmp_path_factory.mktemp("mixed")
    summary = camlens.explain_dataset(model, str(photos), out, layers=LAYER, batch_size=4, shard_size=5,
                                      targets="label", progress=False)  # fmt: skip
    return out, summary


def test_photos_of_mixed_sizes_get_the_engines_map_each_with_its_path_and_geometry(photos, model, mixed):
    out, summary = mixed
    assert (summary.batches, summary.groups) == (8, 8)  # sorted by size: each batch of one size (2 photos share one)
    assert summary.items_computed == 9 and summary.preprocessing.startswith(
        "no resize, RGB, values in [0, 1] [defaults"
    )
    results = open_results(out)
    assert results.config["preprocess"] == {**Preprocess().to_dict(), "source": results.config["preprocess"]["source"]}
    assert results.manifest["classes"] == ["cat", "coffee", "space"]
    shard = results.shard(0)
    assert "maps_hw/gradcam/layer3" in shard  # padded to the shard's largest, each item's own size kept
    for i, rel in enumerate(FILES):
        item = results[i]
        x, g = Preprocess()(photos / rel)
        want = engine(model, x[None], item.label)  # one by one: nothing depends on the batch (targets="label")
        assert item.path == rel and item.label == sorted(PHOTOS).index(rel.split("/")[0])
        assert item.geometry == g and g.original == x.shape[-2:]
        close(item.maps["gradcam/layer3"], want.raw[LAYER][0])
        assert int(item.targets) == item.label and item.pred == int(want.logits.argmax())
        assert float(item.probs) == pytest.approx(float(want.logits.softmax(1)[0, item.label]), rel=1e-5)
        on_photo = item.geometry.to_original(item.maps["gradcam/layer3"])
        assert on_photo.shape == x.shape[-2:]
    with pytest.raises(InputError, match="have different sizes"):
        results.maps(range(9))
    assert results.maps(range(9), size=(8, 8)).shape == (9, 8, 8)


def test_the_table_is_one_row_per_item_with_values_from_the_shards(photos, mixed):
    results = open_results(mixed[0])
    table = results.table()
    assert list(table["id"]) == list(range(9)) and list(table["path"]) == FILES
    assert list(table["label_name"]) == [f.split("/")[0] for f in FILES]
    for i, row in table.iterrows():
        item = results[i]
        m = item.maps["gradcam/layer3"]
        assert (row["label"], row["prediction"], row["target"]) == (item.label, item.pred, int(item.targets))
        assert row["correct"] == (item.label == item.pred)
        assert row["p_target"] == pytest.approx(float(item.probs)) == pytest.approx(row["p_label"])  # targets=label
        assert row["p_prediction"] >= row["p_label"] - 1e-7
        assert (row["height"], row["width"]) == item.geometry.original
        assert row["gradcam/layer3 max"] == pytest.approx(float(m.max()))
        assert row["gradcam/layer3 mean"] == pytest.approx(float(m.mean()), rel=1e-5)
        peak = int(m.argmax())
        if float(m.max()) > 0:
            assert row["gradcam/layer3 peak_y"] == pytest.approx((peak // m.shape[1] + 0.5) / m.shape[0])
            assert row["gradcam/layer3 peak_x"] == pytest.approx((peak % m.shape[1] + 0.5) / m.shape[1])
    assert all(np.isscalar(v) or v is None for v in table.iloc[0].tolist())


def test_table_without_pandas_says_how_to_install_it(mixed, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"Results.table\(\) needs pandas: pip install pandas"):
        open_results(mixed[0]).table()


def test_a_fixed_size_is_one_batch_and_matches_the_engine_on_the_preprocessed_tensors(photos, model, tmp_path):
    pre = Preprocess(size=40, crop=(32, 32), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    camlens.explain_dataset(model, str(photos), tmp_path, layers=LAYER, preprocess=pre, batch_size=16,
                            shard_size=16, progress=False)  # fmt: skip
    results = open_results(tmp_path)
    x = torch.stack([pre(photos / rel)[0] for rel in FILES])
    want = engine(model, x)
    assert "maps_hw/gradcam/layer3" not in results.shard(0)
    close(results.maps(range(9)), want.raw[LAYER])
    assert [results[i].path for i in range(9)] == FILES
    assert results[2].geometry.crop[2:] == (32, 32) and min(results[2].geometry.resized) == 40


def test_cli_with_size_crop_and_figures(photos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["explain-dataset", "--model", "testmodels:small_resnet", "--data", str(photos), "--out", str(out),
            "--layers", LAYER, "--size", "40", "--crop", "32", "--figures", "2", "--batch-size", "4",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "preprocess: resize shorter side to 40 (bilinear), centre crop 32x32" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["preprocess"]["size"] == 40 and manifest["config"]["preprocess"]["crop"] == [32, 32]
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert figures == ["class-000-cat.png", "class-001-coffee.png", "class-002-space.png"]
    for name in figures:
        with Image.open(out / "figures" / name) as im:
            assert im.size[0] > 300 and im.size[1] > 300
    assert f"figures: 3 in {out / 'figures'}" in printed


def test_an_out_folder_in_the_data_folder_is_refused_before_anything_is_written(photos, tmp_path, capsys):
    before = sorted(p.relative_to(photos) for p in photos.rglob("*"))
    for out in (photos, photos / "results", photos / "cat" / ".." / "maps"):
        argv = ["explain-dataset", "--model", "testmodels:small_resnet", "--data", str(photos), "--out", str(out),
                "--layers", LAYER, "--figures", "1", "--no-progress"]  # fmt: skip
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"InputError: out={str(out)!r} (--out) is inside the data folder {str(photos)!r}" in err, err
    assert sorted(p.relative_to(photos) for p in photos.rglob("*")) == before  # no class 'figures', no manifest


def test_an_interrupted_run_resumes_and_another_preprocessing_is_refused(photos, model, mixed, tmp_path, monkeypatch):
    write = ShardWriter._write

    def write_then_stop(self, k):
        if k == 1:
            raise KeyboardInterrupt
        write(self, k)

    kw = {"layers": LAYER, "batch_size": 4, "shard_size": 5, "targets": "label", "progress": False}
    monkeypatch.setattr(ShardWriter, "_write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        camlens.explain_dataset(model, str(photos), tmp_path, **kw)
    monkeypatch.setattr(ShardWriter, "_write", write)
    assert sorted(p.name for p in tmp_path.glob("shard-*.safetensors")) == ["shard-000000.safetensors"]
    summary = camlens.explain_dataset(model, str(photos), tmp_path, **kw)
    assert (summary.shards_skipped, summary.shards_computed) == (1, 1)
    for name in ("shard-000000.safetensors", "shard-000001.safetensors"):  # the same bytes as the run never stopped
        assert (tmp_path / name).read_bytes() == (mixed[0] / name).read_bytes()
    with pytest.raises(DataError, match=r"another configuration \(preprocess: was .*'size': None.*now .*'size': 48"):
        camlens.explain_dataset(model, str(photos), tmp_path, preprocess={"size": 48}, **kw)


class MixedTensors(Dataset):
    """Tensors of three sizes, no file behind them."""

    sizes = ((24, 24), (32, 20), (24, 24), (16, 40), (32, 20))

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int):
        h, w = self.sizes[i]
        return torch.rand(3, h, w, generator=torch.Generator().manual_seed(i)), i % 3


def test_a_tensor_dataset_of_mixed_sizes_is_run_in_groups_of_one_size(model, tmp_path):
    ds = MixedTensors()
    summary = camlens.explain_dataset(model, ds, tmp_path, batch_size=8, progress=False)  # automatic layer
    assert (summary.batches, summary.groups) == (1, 3)
    assert "mixed input sizes: 1 batches ran as 3 model passes of one size each" in str(summary)
    results = open_results(tmp_path)
    assert summary.preprocessing is None and "preprocess" not in results.config
    layer = summary.layers[0]
    cam = camlens.GradCAM(model, layer, upsample=False, normalize=False)
    for i in range(len(ds)):
        item = results[i]
        assert item.path is None and item.geometry is None
        close(item.maps[f"gradcam/{layer}"], cam(ds[i][0][None]).raw[layer][0])
    assert len({results[i].maps[f"gradcam/{layer}"].shape for i in range(len(ds))}) == 3
    assert results.table()["path"].isna().all()


def test_predictions_are_named_by_the_models_classes_and_labels_by_the_folders(photos, tmp_path):
    from camlens.demo.checkpoint import save_checkpoint
    from camlens.demo.models import ConvNet

    torch.manual_seed(3)
    meta = {"architecture": "convnet", "model_kwargs": {"in_channels": 3, "num_classes": 3},
            "classes": ["kitten", "mug", "orbit"]}  # fmt: skip
    ckpt = save_checkpoint(tmp_path / "ckpt", ConvNet(in_channels=3, num_classes=3).eval(), meta)
    camlens.explain_dataset(str(ckpt), str(photos), tmp_path / "out", preprocess={"size": (28, 28), "channels": 3},
                            progress=False)  # fmt: skip
    table = open_results(tmp_path / "out").table()
    assert list(table["label_name"]) == [f.split("/")[0] for f in FILES]
    assert list(table["prediction_name"]) == [["kitten", "mug", "orbit"][p] for p in table["prediction"]]


@pytest.mark.parametrize("preprocess", [None, {"size": (32, 32)}], ids=["own-sizes", "fixed-size"])
def test_a_corrupt_photo_stops_the_run_naming_it_and_finished_shards_stay(photos, model, tmp_path, preprocess):
    import shutil

    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    (root / "space" / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DataError, match=f"image file {root / 'space' / 'zz-broken.jpg'} is corrupt"):
        camlens.explain_dataset(model, str(root), tmp_path / "out", layers=LAYER, batch_size=4, shard_size=5,
                                preprocess=preprocess, progress=False)  # fmt: skip
    finished = sorted(p.name for p in (tmp_path / "out").glob("shard-*.safetensors"))
    assert finished == ([] if preprocess is None else ["shard-000000.safetensors"])  # sizes are read first
