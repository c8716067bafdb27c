"""sources.py: hostile folders (corrupt and oversized images, links outside), odd factory paths, and load_model's
checkpoints, factories, weights files and preprocessing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from torch.utils.data import DataLoader

from camlens.errors import DataError, InputError
from camlens.preprocess import Preprocess
from camlens.sources import ImageFolder, load_dataset, load_factory, load_model, resolve_preprocess
from testmodels import GapNet


def _folder(root, files):
    for rel, make in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(root / rel)
    return root


def _png(value=128, size=8):
    return lambda p: Image.new("L", (size, size), value).save(p)


def test_corrupt_image_is_a_data_error_naming_the_file_also_through_a_dataloader(tmp_path):
    root = _folder(tmp_path, {"a/good.png": _png(), "b/bad.png": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnope")})
    ds = ImageFolder(root, mode="L")
    assert [f.name for f, _ in ds.files] == ["good.png", "bad.png"]
    torch.testing.assert_close(ds[0][0], torch.full((1, 8, 8), 128 / 255))
    with pytest.raises(DataError, match=f"image file {root / 'b' / 'bad.png'} is corrupt or not an image"):
        ds[1]
    for workers in (0, 1):  # a worker re-raises it as the same class in the main process
        with pytest.raises(DataError, match=f"image file {root / 'b' / 'bad.png'} is corrupt"):
            list(DataLoader(ds, batch_size=2, num_workers=workers))


def test_decompression_bomb_in_a_folder_is_a_data_error(tmp_path, monkeypatch):
    root = _folder(tmp_path, {"a/big.png": _png(size=100)})
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError, match=f"image file {root / 'a' / 'big.png'} is too large for Pillow's "
                                        "decompression-bomb limit of 1000 pixels"):
        ImageFolder(root)[0]


def test_16_bit_images_in_a_folder_keep_their_range_in_rgb_and_gray(tmp_path):
    px = np.array([[0, 300], [30000, 65535]], np.uint16)
    root = _folder(tmp_path, {"a/x.png": lambda p: Image.fromarray(px).save(p)})
    want = torch.from_numpy(px.astype(np.float32) / 65535)
    rgb, label = ImageFolder(root)[0]
    assert rgb.shape == (3, 2, 2) and label == 0
    for c in range(3):
        torch.testing.assert_close(rgb[c], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(ImageFolder(root, mode="L")[0][0][0], want, atol=1e-6, rtol=0)


def test_links_outside_the_folder_are_skipped_with_a_count_and_links_inside_kept(tmp_path):
    outside = _folder(tmp_path / "outside", {"secret.png": _png(255), "cls/other.png": _png(255)})
    root = _folder(tmp_path / "data", {"a/in.png": _png(10)})
    (root / "a" / "in-link.png").symlink_to(root / "a" / "in.png")
    (root / "a" / "out.png").symlink_to(outside / "secret.png")
    (root / "b").symlink_to(outside / "cls")  # a whole class folder that is elsewhere
    with pytest.warns(UserWarning, match=rf"image folder {root}: skipped 2 file\(s\) that link outside it"):
        ds, info = load_dataset(str(root))
    assert isinstance(ds, ImageFolder) and info["skipped_links"] == 2
    assert [f.name for f, _ in ds.files] == ["in-link.png", "in.png"]
    assert sorted(p.name for p in ds.skipped_links) == ["other.png", "out.png"]
    assert all(abs(float(ds[i][0].max()) - 10 / 255) < 1e-7 for i in range(len(ds)))  # nothing outside read
    (root / "a" / "in.png").unlink()
    (root / "a" / "in-link.png").unlink()
    with pytest.warns(UserWarning), pytest.raises(DataError) as e:
        ImageFolder(root)
    assert str(e.value).endswith("lay it out as ROOT/<class name>/<image files> (2 linking outside it were skipped)")


def test_a_flat_folder_of_images_is_one_unlabelled_set(tmp_path):
    outside = _folder(tmp_path / "outside", {"secret.png": _png(255)})
    files = {"b.png": _png(20), "a.jpg": _png(40), "notes.txt": lambda p: p.write_text("x")}
    root = _folder(tmp_path / "photos", files)
    (root / "empty-subfolder").mkdir()  # a subfolder without images does not make it a class folder
    (root / "out.png").symlink_to(outside / "secret.png")
    with pytest.warns(UserWarning, match="skipped 1 file"):
        ds, info = load_dataset(str(root))
    assert isinstance(ds, ImageFolder) and ds.classes == [] and info["kind"] == "image-folder"
    assert [(f.name, label) for f, label in ds.files] == [("a.jpg", -1), ("b.png", -1)]
    assert ds.relative_path(1) == "b.png"
    with pytest.warns(UserWarning, match="skipped 1 file"):  # every ImageFolder of root says so
        image, label = ImageFolder(root, mode="L")[1]
    assert label == -1 and image.shape == (1, 8, 8)
    torch.testing.assert_close(image, torch.full((1, 8, 8), 20 / 255))


def test_class_folders_win_over_loose_images(tmp_path):
    root = _folder(tmp_path, {"loose.png": _png(), "cat/x.png": _png(), "dog/y.png": _png()})
    ds = ImageFolder(root)
    assert ds.classes == ["cat", "dog"] and [(f.name, label) for f, label in ds.files] == [("x.png", 0), ("y.png", 1)]


def test_folder_without_links_reports_no_skips(tmp_path):
    root = _folder(tmp_path, {"a/x.png": _png(), "b/y.png": _png()})
    ds, info = load_dataset(str(root))
    assert info == {"kind": "image-folder", "spec": str(root), "object_mask": False} and len(ds) == 2


def test_factory_file_must_be_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "fifo.py")  # executing it would block on the read
    (tmp_path / "dir.py").mkdir()
    for name in ("fifo.py", "dir.py", "missing.py"):
        spec = f"{tmp_path / name}:build"
        with pytest.raises(InputError) as e:
            load_factory(spec, "data")
        assert str(e.value) == f"data={spec!r}: file {tmp_path / name} does not exist"


def test_a_factory_file_that_does_not_parse_is_an_input_error_and_runs_again_once_fixed(tmp_path):
    f = tmp_path / "models.py"
    f.write_text("def build(:\n    pass\n")
    with pytest.raises(InputError) as e:
        load_factory(f"{f}:build", "model")
    assert str(e.value) == f"model='{f}:build': {f}, line 1: invalid syntax (SyntaxError); fix the file and run again"
    f.write_text("N = 1\nraise RuntimeError('boom')\n")  # the user's own error while importing: as it is
    with pytest.raises(RuntimeError, match="boom"):
        load_factory(f"{f}:build", "model")
    f.write_text("def build():\n    return 7\n")  # fixed: the same process runs the file again, not a half-run module
    assert load_factory(f"{f}:build", "model")() == 7


def test_random_weights_are_the_same_on_every_load_and_leave_the_callers_random_state(tmp_path):
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    a, info = load_model("torchvision:resnet18", CPU, weights="none")
    assert torch.equal(torch.random.get_rng_state(), state) and info["weights"] == "random (--weights none)"
    torch.rand(3)  # another random state: the same weights
    b, _ = load_model("torchvision:resnet18", CPU, weights="none")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert float(a.fc.weight.detach().std()) > 0.01  # random, not zeros


# --- load_model: checkpoints, factories, weights files, preprocessing -----------------------------------------

CPU = torch.device("cpu")


def _factory_file(tmp_path, body="return GapNet()"):
    f = tmp_path / "my_models.py"
    f.write_text(f"from testmodels import GapNet\n\n\ndef build():\n    {body}\n")
    return f"{f}:build"


def test_a_factory_records_what_it_is_and_no_preprocessing(tmp_path):
    spec = _factory_file(tmp_path)
    model, info = load_model(spec, CPU)
    assert not model.training
    assert info == {"spec": spec, "kind": "factory", "in_channels": 3, "classes": None, "preprocess": None,
                    "weights": "as the factory built it"}  # fmt: skip
    pre = resolve_preprocess(info)
    assert pre == Preprocess(channels=3) and pre.source.startswith("defaults: the model records no preprocessing")
    pre = resolve_preprocess(info, size=32, crop=28, mean=(0.5,), std=(0.25,))
    assert pre == Preprocess(size=32, crop=(28, 28), mean=(0.5,) * 3, std=(0.25,) * 3)
    assert pre.source == "flags (size, crop, mean, std)"


def test_flags_override_the_model_s_own_preprocessing_one_by_one():
    own = Preprocess(size=256, crop=(224, 224), mean=(0.4, 0.5, 0.6), std=(0.2, 0.2, 0.2), source="timm data config")
    info = {"preprocess": own}
    assert resolve_preprocess(info) is own
    pre = resolve_preprocess(info, crop=(200, 180), interpolation="bicubic")
    assert (pre.size, pre.crop, pre.mean, pre.interpolation) == (256, (200, 180), own.mean, "bicubic")
    assert pre.source == "timm data config, with flags (crop, interpolation)"
    with pytest.raises(InputError, match=r"channels=1 differs from the model's 3: give --mean and --std"):
        resolve_preprocess(info, channels=1)
    gray = resolve_preprocess(info, channels=1, mean=(0.5,), std=(0.5,))
    assert gray.channels == 1 and gray.mean == (0.5,)


def _save(state, path):
    if str(path).endswith(".safetensors"):
        safetensors.torch.save_file(state, str(path))
    else:
        torch.save(state, path)
    return str(path)


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt", "nested.pt", "dp.pth"])
def test_weights_files_are_applied_to_a_factory(tmp_path, name):
    spec = _factory_file(tmp_path)
    torch.manual_seed(3)
    trained = GapNet()
    state = trained.state_dict()
    saved = {"nested.pt": {"state_dict": state, "epoch": 3}, "dp.pth": {f"module.{k}": v for k, v in state.items()}}
    path = _save(saved.get(name, state), tmp_path / name)
    model, info = load_model(spec, CPU, weights=path)
    assert info["weights"] == f"file {path}"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_a_pickled_model_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    spec = _factory_file(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"fc.weight": torch.zeros(1), "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match=r"holds Python objects other than tensors .* camlens never unpickles them"):
        load_model(spec, CPU, weights=str(tmp_path / "evil.pt"))
    assert not marker.exists()
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    with pytest.raises(InputError, match=r"is neither a .safetensors file nor a state dict written by torch.save"):
        load_model(spec, CPU, weights=str(tmp_path / "model.onnx"))
    (tmp_path / "fake.safetensors").write_bytes(b"nope")
    with pytest.raises(InputError, match=r"named .safetensors but does not start with a safetensors header"):
        load_model(spec, CPU, weights=str(tmp_path / "fake.safetensors"))


def test_weights_that_do_not_fit_name_the_keys_and_shapes(tmp_path):
    spec = _factory_file(tmp_path)
    state = GapNet(classes=7).state_dict()
    path = _save(state, tmp_path / "seven.safetensors")
    with pytest.raises(InputError) as e:
        load_model(spec, CPU, weights=path)
    assert "file vs model shapes: fc.weight (7, 6) vs (5, 6), fc.bias (7,) vs (5,)" in str(e.value)
    del state["fc.bias"]
    state["extra"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing: fc.bias; unexpected: extra"):
        load_model(spec, CPU, weights=_save(state, tmp_path / "other.pt"))
    with pytest.raises(InputError, match=r"weights='.*missing.pt': no such file; give a .safetensors file"):
        load_model(spec, CPU, weights=str(tmp_path / "missing.pt"))
    with pytest.raises(InputError, match="weights='none' is for zoo models"):
        load_model(spec, CPU, weights="none")


def test_the_demo_checkpoint_carries_its_28x28_grayscale_preprocessing(tmp_path):
    from camlens.demo.checkpoint import save_checkpoint
    from camlens.demo.models import ConvNet

    save_checkpoint(tmp_path / "ck", ConvNet(), {"architecture": "convnet", "classes": ["a", "b"]})
    model, info = load_model(str(tmp_path / "ck"), CPU)
    pre = info["preprocess"]
    assert info["kind"] == "checkpoint" and info["classes"] == ["a", "b"]
    assert info["weights"] == "as the checkpoint built it"
    assert pre == Preprocess(size=28, crop=(28, 28), channels=1) and pre.source == "camlens checkpoint"
    photo = np.zeros((300, 451, 3), np.uint8)
    photo[:, :, 0] = 255  # red: luma 0.299
    x, geo = pre(photo)
    assert x.shape == (1, 28, 28) and geo.original == (300, 451)
    torch.testing.assert_close(x, torch.full((1, 28, 28), 0.299), atol=1 / 255, rtol=0)
    assert model(x[None]).shape == (1, 10)


def test_a_folder_that_is_nothing_says_what_would_be(tmp_path):
    with pytest.raises(InputError, match=r"is a folder but is not a camlens checkpoint \(no meta.json\), a folder "
                                         r"written by transformers' save_pretrained \(no config.json\)"):
        load_model(str(tmp_path), CPU)
    with pytest.raises(InputError, match="names no model after 'timm:'"):
        load_model("timm:", CPU)


def test_a_spec_that_names_nothing_lists_every_form(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as e:
        load_model("nowhere", CPU)
    assert str(e.value) == (
        "model='nowhere' is neither a checkpoint folder or a save_pretrained folder (no such folder), a factory "
        "'module:function' or 'file.py:function', nor 'torchvision:NAME', 'timm:NAME' or 'hf:ID'; train one with "
        "`camlens train --out FOLDER`, or pass e.g. 'mypkg.models:build' or 'torchvision:resnet18'"
    )
