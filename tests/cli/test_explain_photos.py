"""`camlens explain MODEL photo.jpg scan.png gray.jpg`: real photos of their own sizes, maps drawn back on them.

The photos are scikit-image's sample photographs saved as JPEG and PNG (one
grayscale); the models are torchvision's resnet18 and tiny transformers ViT and
Swin folders written by ``save_pretrained``, all with random weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from skimage import data as skdata

import camlens
from camlens._util.lock import LOCK_NAME
from camlens.cli import main
from camlens.preprocess import Geometry, Preprocess
from testmodels import write_factory

PHOTOS = {"photo.jpg": skdata.chelsea, "scan.png": skdata.coffee, "gray.jpg": skdata.camera}
SIZES = {"photo": (451, 300), "scan": (600, 400), "gray": (512, 512)}  # (width, height)
FACTORY = """
import torch, torchvision

def build():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, load in PHOTOS.items():
        arr = load()
        Image.fromarray(arr, "L" if arr.ndim == 2 else "RGB").save(folder / name, **(
            {"quality": 92} if name.endswith(".jpg") else {}))  # fmt: skip
    with Image.open(folder / "gray.jpg") as im:
        assert im.mode == "L"
    return folder


@pytest.fixture(scope="module")
def factory(tmp_path_factory):
    return write_factory(tmp_path_factory.mktemp("factory"), FACTORY, name="my_models.py")


def _run(argv, capsys) -> str:
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _overlays(out) -> dict[str, list]:
    found: dict[str, list] = {}
    for p in sorted((out / "overlays").iterdir()):
        stem = next(s for s in SIZES if p.name.startswith(f"{s}_"))
        found.setdefault(stem, []).append(p)
    return found


def _assert_photo_sized_overlays(out, per_photo: int) -> None:
    found = _overlays(out)
    assert sorted(found) == sorted(SIZES)
    for stem, paths in found.items():
        assert len(paths) == per_photo
        for p in paths:
            with Image.open(p) as im:
                assert (im.format, im.mode, im.size) == ("PNG", "RGB", SIZES[stem])


def test_resnet18_factory_writes_overlays_of_each_photos_own_size(photos, factory, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["explain", factory, *(str(photos / n) for n in PHOTOS), "--save-overlays", "--save-maps",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    text = _run(argv, capsys)
    assert "preprocess: no resize, RGB, values in [0, 1]" in text
    assert "layers: layer4 (automatic choice;" in text
    _assert_photo_sized_overlays(out, 1)
    written = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    assert written == ["explain.html", "gray.png", "grid.png", "maps", "overlays", "photo.png", "scan.png"]
    # the overlay is camlens.overlay of the saved map, mapped back through the recorded geometry
    model = torchvision_resnet18()
    for stem in SIZES:
        with safe_open(str(out / "maps" / f"{stem}.safetensors"), "pt") as f:
            meta = f.metadata()
            m, classes = f.get_tensor("gradcam/layer4"), f.get_tensor("classes")
        geometry = Geometry.from_dict(json.loads(meta["geometry"]))
        pre = Preprocess.from_dict(json.loads(meta["preprocess"]))
        assert geometry.original == SIZES[stem][::-1] and pre.channels == 3
        photo_file = next(photos.glob(f"{stem}.*"))
        x, _ = pre(Image.open(photo_file))
        engine = camlens.GradCAM(model, "layer4")(x[None])
        assert classes.tolist() == engine.targets.tolist()
        torch.testing.assert_close(m, engine.maps["layer4"], atol=1e-5, rtol=0)
        (overlay_file,) = _overlays(out)[stem]
        expected = camlens.overlay(Image.open(photo_file), geometry.to_original(m[0]))
        np.testing.assert_array_equal(np.asarray(Image.open(overlay_file)), np.asarray(expected))


def torchvision_resnet18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def test_batches_by_size_give_the_maps_of_one_image_at_a_time(photos, factory, tmp_path, capsys):
    runs = {}
    for bs in (1, 3):
        out = tmp_path / f"bs{bs}"
        argv = ["explain", factory, str(photos), "--size", "64", "--methods", "gradcam", "hirescam",
                "--batch-size", str(bs), "--save-maps", "--no-figures", "--out", str(out), "--device", "cpu"]
        text = _run(argv, capsys)
        assert "resize shorter side to 64" in text
        assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == ["maps"]  # --no-figures
        runs[bs] = {}
        for stem in SIZES:
            with safe_open(str(out / "maps" / f"{stem}.safetensors"), "pt") as f:
                runs[bs][stem] = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert runs[1]["photo"]["gradcam/layer4"].shape == (1, 64, 96)  # 300x451 -> 64x96: the aspect kept
    assert sorted(runs[1]["photo"]) == ["classes", "gradcam/layer4", "hirescam/layer4", "probs"]
    for stem in SIZES:
        for k, v in runs[1][stem].items():
            torch.testing.assert_close(runs[3][stem][k], v, atol=1e-5, rtol=0)


def _vit(folder, labels):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(labels), id2label=dict(enumerate(labels)),
                       label2id={n: i for i, n in enumerate(labels)})  # fmt: skip
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)


def _swin(folder, labels):
    from transformers import SwinConfig, SwinForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={n: i for i, n in enumerate(labels)})  # fmt: skip
    SwinForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)


LABELS = ["cat", "cup", "camera <man>"]


@pytest.mark.parametrize(
    "build, extra, prepared",
    [
        (_vit, [], "resize to 64x64"),
        (_swin, [], "resize to 64x64"),
        (_swin, ["--size", "72"], "resize shorter side to 72"),  # the photo's aspect: Swin pads to its windows
    ],
    ids=["vit", "swin", "swin-photo-aspect"],
)
def test_transformers_folders_write_overlays_of_each_photos_own_size(build, extra, prepared, photos, tmp_path,
                                                                      capsys):  # fmt: skip
    folder = tmp_path / "model"
    build(folder, LABELS)
    out = tmp_path / "out"
    argv = ["explain", str(folder), str(photos / "*.*"), "--top-k", "2", "--save-overlays", "--out", str(out),
            "--device", "cpu", *extra]  # fmt: skip
    text = _run(argv, capsys)
    assert f"preprocess: {prepared}" in text and "transformers image processor" in text
    _assert_photo_sized_overlays(out, 2)
    ends = ("_0-cat.png", "_1-cup.png", "_2-camera_man.png")  # class names from id2label, made file-safe
    assert all(p.name.endswith(ends) for paths in _overlays(out).values() for p in paths)
    page = (out / "explain.html").read_text()
    assert "camera &lt;man&gt;" in page and "camera <man>" not in page


def test_guided_methods_draw_signed_gradients_on_the_photo(photos, factory, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["explain", factory, str(photos / "photo.jpg"), str(photos / "gray.jpg"), "--size", "64", "--crop", "64",
            "--methods", "guided-backprop", "guided-gradcam", "--layers", "layer4", "--save-overlays",
            "--out", str(out), "--device", "cpu"]  # fmt: skip
    _run(argv, capsys)
    for stem in ("photo", "gray"):
        paths = sorted((out / "overlays").glob(f"{stem}_*"))
        assert [p.name.split("_")[1] for p in paths] == ["guided-backprop", "guided-gradcam"]
        for p in paths:
            arr = np.asarray(Image.open(p))
            assert arr.shape == (*SIZES[stem][::-1], 3)
            # outside the centre crop (the photo's left and right edges) no value: the photo greyed
            if stem == "photo":
                grey = np.asarray(Image.open(photos / "photo.jpg").convert("RGB")).astype(np.float32)
                luma = np.round(grey @ np.array([0.299, 0.587, 0.114], np.float32))
                np.testing.assert_allclose(arr[:, :40, 0], luma[:, :40], atol=1)
                assert (arr[:, :40, 0] == arr[:, :40, 1]).all()
        assert (out / f"{stem}.png").is_file()


@pytest.mark.parametrize(
    "methods, warned, maps",
    [
        (["guided-backprop"], "--layers layer3 is ignored for guided-backprop: it takes no layers; omit --layers",
         ["guided-backprop/input"]),
        (["gradcam", "guided-backprop"], "--layers layer3 is ignored for guided-backprop: it takes no layers",
         ["gradcam/layer3", "guided-backprop/input"]),
        # both use the layer: FullGrad sums the bias terms inside it into one map
        (["fullgrad", "guided-gradcam"], None, ["fullgrad/fullgrad", "guided-gradcam/layer3"]),
    ],
)
def test_layers_given_to_a_method_that_takes_none_are_named_in_one_warning(photos, factory, tmp_path, capsys,
                                                                           methods, warned, maps):  # fmt: skip
    out = tmp_path / "out"
    argv = ["explain", factory, str(photos / "photo.jpg"), "--size", "32", "--crop", "32", "--methods", *methods,
            "--layers", "layer3", "--no-figures", "--save-maps", "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "warning" in line] == ([] if warned is None else
                                                                       [f"camlens explain: warning: {warned}"])
    with safe_open(str(out / "maps" / "photo.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["classes", *maps, "probs"]


BIASED_FACTORY = FACTORY + """
def build_biased():  # batch norms with bias terms (a fresh one has none: beta 0, running mean 0)
    model = build()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.normal_(0, 0.5)
                m.running_mean.normal_(0, 0.5)
    return model
"""


def test_fullgrad_beside_the_automatic_layer_sums_every_bias_layer(photos, tmp_path, capsys):
    factory = write_factory(tmp_path, BIASED_FACTORY, "build_biased", "biased_models.py")

    def fullgrad_map(name: str, *extra: str) -> torch.Tensor:
        out = tmp_path / name
        _run(["explain", factory, str(photos / "photo.jpg"), "--size", "32", "--crop", "32", *extra, "--no-figures",
              "--save-maps", "--out", str(out), "--device", "cpu"], capsys)  # fmt: skip
        with safe_open(str(out / "maps" / "photo.safetensors"), "pt") as f:
            return f.get_tensor("fullgrad/fullgrad")

    auto = fullgrad_map("auto", "--methods", "gradcam", "fullgrad")  # layer4 chosen, for Grad-CAM only
    every = fullgrad_map("every", "--methods", "fullgrad", "--layers", "bn1", "layer1", "layer2", "layer3", "layer4",
                         "fc")  # fmt: skip
    inside = fullgrad_map("inside", "--methods", "fullgrad", "--layers", "layer4")
    torch.testing.assert_close(auto, every, atol=1e-6, rtol=0)
    assert float((auto - inside).abs().max()) > 0.05  # layer4's biases alone give another map


def test_target_by_name_from_a_labels_file(photos, factory, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(999)) + "tabby & <co>\n\n")
    out = tmp_path / "out"
    argv = ["explain", factory, str(photos / "photo.jpg"), "--labels", str(labels), "--target", "TABBY & <co>",
            "--size", "64", "--save-overlays", "--out", str(out), "--device", "cpu"]  # fmt: skip
    text = _run(argv, capsys)
    assert text.splitlines()[-2].startswith("photo: predicted: class ")
    assert [p.name for p in (out / "overlays").iterdir()] == ["photo_gradcam_layer4_999-tabby_co.png"]
    assert "tabby &amp; &lt;co&gt;" in (out / "explain.html").read_text()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--labels", "{labels}"], "--labels {labels} names 2 classes; the model scores 1000"),
        (["--target", "tabby"], "target='tabby' is a class name, but the model has no class names"),
        (["--batch-size", "0"], "--batch-size 0 must be 1 or more"),
        (["--top-k", "0"], "TargetError: --top-k 0 must be 1 or more"),
        (["--target", "-1"], "target='-1' is a negative class index; give a class index from 0, or 'predicted'"),
        (["--alpha", "1.5"], "--alpha 1.5 must be in [0, 1]"),
        (["--methods", "gradcam", "--size", "0"], "--size '0'"),
        # the 451x300 photo would become 150333x100000 pixels: refused before the resize, not killed for memory
        (["--size", "100000"], "size=100000 would make this 451x300 image 150333x100000 (15,033,300,000 pixels)"),
        (["--crop", "20000"], "crop=(20000, 20000) would make this 451x300 image 20000x20000"),
        (["--layers", "layer4", "layer3", "layer4"], "InputError: --layers layer4 layer3 layer4 names layer4 more "
         "than once; give each layer once"),
    ],
)
def test_bad_input_is_a_camlens_error(photos, factory, tmp_path, capsys, extra, match):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    extra = [e.replace("{labels}", str(labels)) for e in extra]
    argv = ["explain", factory, str(photos / "photo.jpg"), "--out", str(tmp_path / "o"), "--device", "cpu", *extra]
    assert main(argv) == 1
    assert match.replace("{labels}", str(labels)) in capsys.readouterr().err


def test_a_corrupt_photo_in_a_folder_is_a_data_error_naming_it(photos, factory, tmp_path, capsys):
    import threading

    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photos / "photo.jpg").read_bytes())
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    threads = threading.active_count()
    argv = ["explain", factory, str(folder), "--size", "32", "--batch-size", "1", "--out", str(tmp_path / "o"),
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"DataError: image file {folder / 'b.jpg'} is corrupt or not an image" in err and "Traceback" not in err
    assert threading.active_count() == threads  # the reading thread is gone


def test_a_link_out_of_the_folder_is_skipped_with_a_camlens_warning(photos, factory, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((photos / "photo.jpg").read_bytes())
    (folder / "z.jpg").symlink_to(photos / "scan.png")  # a link to a file outside the folder
    for spec in (str(folder), str(folder / "*.jpg")):
        out = tmp_path / "o"
        argv = ["explain", factory, spec, "--size", "32", "--out", str(out), "--device", "cpu"]
        assert main(argv) == 0
        captured = capsys.readouterr()
        assert (f"camlens explain: warning: images: skipped 1 file(s) that link outside the folder naming them "
                f"(first: {folder / 'z.jpg'} -> {photos / 'scan.png'})") in captured.err  # fmt: skip
        assert "UserWarning" not in captured.err and "explained 1 image(s)" in captured.out
        assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == ["a.png"]


def test_an_out_folder_holding_the_photos_is_refused_and_no_photo_is_overwritten(photos, factory, tmp_path, capsys):
    folder = tmp_path / "mine"
    (folder / "overlays").mkdir(parents=True)
    gray = Image.open(photos / "gray.jpg")
    gray.save(folder / "gray.png")  # its figure would be mine/gray.png: the photo itself
    gray.save(folder / "overlays" / "g.png")
    (tmp_path / "elsewhere.png").symlink_to(folder / "gray.png")  # a link from outside to a photo in --out
    before = {p: p.read_bytes() for p in folder.rglob("*.png")}
    for image, out, named in ((folder, folder, folder / "gray.png"),
                              (folder / "gray.png", tmp_path / "mine" / ".." / "mine", folder / "gray.png"),
                              (folder / "overlays" / "g.png", folder, folder / "overlays" / "g.png"),
                              (tmp_path / "elsewhere.png", folder, tmp_path / "elsewhere.png")):  # fmt: skip
        argv = ["explain", factory, str(image), "--size", "32", "--out", str(out), "--device", "cpu"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"InputError: --out {out} holds the image {named}: the run's figures" in err, err
    assert {p: p.read_bytes() for p in folder.rglob("*.png")} == before
    argv = ["explain", factory, str(folder), "--size", "32", "--out", str(folder / "figs"), "--device", "cpu"]
    assert main(argv) == 0  # a subfolder of the photos is apart from them
    assert {p: p.read_bytes() for p in folder.rglob("*.png") if "figs" not in p.parts} == before
    assert (folder / "figs" / "gray.png").is_file()
