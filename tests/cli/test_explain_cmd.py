"""`camlens explain`, explain_batch, image loading and figures: values and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from camlens._util.lock import LOCK_NAME
from camlens.cli import main
from camlens.cli.explain import explain_batch, parse_target
from camlens.demo.checkpoint import load_checkpoint
from camlens.demo.data import CLASSES, load_split
from camlens.demo.train import train
from camlens.errors import DataError, InputError, TargetError
from camlens.viz.figures import colorize, overlay
from camlens.viz.images import load_image


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("explain") / "ckpt"
    train(seed=0, epochs=1, train_limit=512, val_limit=256, checkpoint=path, progress=False, log=None, device="cpu")
    return path


@pytest.fixture(scope="module")
def model(ckpt):
    return load_checkpoint(ckpt)[0]


def _test_images(idx):
    img, lbl = load_split(None, "test")
    return img[idx].unsqueeze(1).float() / 255.0, lbl[idx]


def _gradcam_by_hand(model, x1, layer_index, cls):
    """Grad-CAM from the paper's formula, one image, channel by channel (no engine, no hooks)."""
    head, tail = model.seq[: layer_index + 1], model.seq[layer_index + 1 :]
    with torch.enable_grad():
        a = head(x1).detach().requires_grad_(True)
        score = tail(a)[0, cls]
        (g,) = torch.autograd.grad(score, a)
    a, g = a[0].double(), g[0].double()
    cam = torch.zeros(a.shape[1:], dtype=torch.float64)
    for k in range(a.shape[0]):
        alpha = g[k].sum() / (g.shape[1] * g.shape[2])
        cam += alpha * a[k]
    cam = torch.clamp(cam, min=0)
    span = cam.max() - cam.min()
    return (cam - cam.min()) / span if span > 0 else torch.zeros_like(cam)


def test_explain_batch_matches_gradcam_by_hand_at_every_layer(model):
    x, y = _test_images([0, 1, 7])
    ex = explain_batch(model, x, ["seq.0", "seq.2", "seq.4"], labels=y)
    logits = model(x).detach()
    assert torch.equal(ex.pred, logits.argmax(1))
    torch.testing.assert_close(ex.pred_prob, torch.softmax(logits, 1).max(1).values)
    for i in range(3):
        for name, li in (("seq.0", 0), ("seq.2", 2), ("seq.4", 4)):
            ref = _gradcam_by_hand(model, x[i : i + 1], li, int(ex.pred[i]))
            torch.testing.assert_close(ex.maps[name][i, 0].double(), ref, atol=2e-5, rtol=0)


def test_explain_batch_top_k_and_fixed_class(model):
    x, _ = _test_images([2, 3])
    logits = model(x).detach()
    ex = explain_batch(model, x, ["seq.4"], top_k=3)
    assert torch.equal(ex.classes, logits.topk(3, 1).indices)
    torch.testing.assert_close(ex.probs, torch.softmax(logits, 1).topk(3, 1).values)
    ex = explain_batch(model, x, ["seq.4"], target=4)
    assert ex.classes.tolist() == [[4], [4]]
    ref = _gradcam_by_hand(model, x[1:2], 4, 4)
    torch.testing.assert_close(ex.maps["seq.4"][1, 0].double(), ref, atol=2e-5, rtol=0)


def test_parse_target():
    assert parse_target("predicted", CLASSES) is None
    assert parse_target("4", CLASSES) == 4
    assert parse_target("ankle BOOT", CLASSES) == 9
    with pytest.raises(TargetError, match=r"target='10' is not 'predicted', a class index 0..9"):
        parse_target("10", CLASSES)


def test_overlay_and_colorize_values():
    img = np.array([[0.0, 1.0]])
    heat = np.array([[0.0, 1.0]])
    jet = colorize(heat, "jet")
    # jet(0) is dark blue (0, 0, 0.5), jet(1) is dark red (0.5, 0, 0)
    np.testing.assert_allclose(jet[0, 0], [0.0, 0.0, 0.5], atol=1e-6)
    np.testing.assert_allclose(jet[0, 1], [0.5, 0.0, 0.0], atol=1e-6)
    out = np.asarray(overlay(img, heat, "jet", alpha=0.25)).astype(float)
    np.testing.assert_allclose(out[0, 0], np.round(255 * (0.75 * 0.0 + 0.25 * jet[0, 0])), atol=1)
    np.testing.assert_allclose(out[0, 1], np.round(255 * (0.75 * 1.0 + 0.25 * jet[0, 1])), atol=1)
    with pytest.raises(InputError, match="alpha=2"):
        overlay(img, heat, alpha=2)
    assert overlay(np.zeros((3, 3)), heat).size == (3, 3)  # the map is resized to the image


def test_load_image_gray_resize_and_invert(tmp_path):
    px = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    Image.fromarray(px, "L").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert x.shape == (1, 28, 28)
    torch.testing.assert_close(x[0], torch.from_numpy(px).float() / 255.0)
    torch.testing.assert_close(load_image(tmp_path / "a.png", invert=True), 1.0 - x)
    # RGB -> luminance L = (299 R + 587 G + 114 B) / 1000, and a 56x56 constant image resizes to a constant
    Image.new("RGB", (56, 56), (200, 100, 50)).save(tmp_path / "b.png")
    lum = round((200 * 299 + 100 * 587 + 50 * 114) / 1000)
    torch.testing.assert_close(load_image(tmp_path / "b.png"), torch.full((1, 28, 28), lum / 255.0))
    Image.new("L", (64, 64), 128).save(tmp_path / "c.jpg", quality=95)
    assert abs(float(load_image(tmp_path / "c.jpg").mean()) - 128 / 255) < 2 / 255


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: Image.new("L", (40, 28)).save(p), "is 40x28; expected a square image"),
        (lambda p: Image.new("L", (10, 10)).save(p), "is 10x10, smaller than the model's 28x28"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\nnot really"), "is corrupt or not an image"),
        (lambda p: p.write_bytes(b""), "is corrupt or not an image"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_image_files(tmp_path, make, match):
    p = tmp_path / "x.png"
    make(p)
    with pytest.raises(DataError, match=match) as e:
        load_image(p)
    assert str(p) in str(e.value)


def test_cli_explain_indices_and_files(ckpt, model, tmp_path, capsys):
    Image.fromarray((np.asarray(load_split(None, "test")[0][5])), "L").resize((56, 56)).save(tmp_path / "mine.png")
    out = tmp_path / "out"
    rc = main(["explain", str(ckpt), "--index", "0", "3", "--image", str(tmp_path / "mine.png"), "--out", str(out),
               "--colormap", "inferno", "--layers", "seq.2", "seq.4"])
    assert rc == 0
    written = sorted(p for p in out.iterdir() if p.name != LOCK_NAME)  # the folder's lock file stays, empty of use
    assert [p.name for p in written] == ["explain.html", "grid.png", "mine.png", "test-00000.png", "test-00003.png"]
    for p in written[1:]:
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100
    x, y = _test_images([0, 3])
    pred = model(x).argmax(1)
    text = capsys.readouterr().out
    assert "grayscale" in text and "[camlens checkpoint]" in text and "layers: seq.2, seq.4 (given)" in text
    lines = [line for line in text.splitlines() if line.startswith(("true:", "mine:"))]
    assert lines[0].startswith(f"true: {CLASSES[int(y[0])]} · predicted: {CLASSES[int(pred[0])]} (")
    assert lines[2].startswith("mine: predicted:")
    page = (out / "explain.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # the grid and one figure per image, embedded


def test_cli_explain_image_goes_through_the_checkpoints_preprocessing(ckpt, model, tmp_path, capsys):
    item = np.asarray(load_split(None, "test")[0][5])
    Image.fromarray(item).save(tmp_path / "item.png")
    out = tmp_path / "out"
    assert main(["explain", str(ckpt), str(tmp_path / "item.png"), "--index", "5", "--layers", "seq.4",
                 "--save-maps", "--out", str(out)]) == 0  # fmt: skip
    from safetensors import safe_open

    x = torch.from_numpy(item).float()[None, None] / 255.0
    ex = explain_batch(model, x, ["seq.4"])
    meta = {}
    for name in ("item", "test-00005"):  # the file and the same picture as a dataset item: the same map
        with safe_open(str(out / "maps" / f"{name}.safetensors"), "pt") as f:
            torch.testing.assert_close(f.get_tensor("gradcam/seq.4"), ex.maps["seq.4"][0], atol=1e-5, rtol=0)
            assert f.get_tensor("classes").tolist() == ex.classes[0].tolist()
            meta[name] = json.loads(f.metadata()["preprocess"])
    assert meta["test-00005"] is None  # a dataset item is the model's input as it is
    assert meta["item"]["channels"] == 1 and meta["item"]["crop"] == [28, 28]


@pytest.mark.parametrize(
    "argv, match",
    [
        ([], "nothing to explain: give image files, folders or patterns (IMAGE ...), or --index"),
        (["--index", "99999"], "--index [99999] out of range; the test set has 4443 images"),
        (["--index", "0", "--target", "hat"], "target='hat' is not 'predicted'"),
        (["--index", "0", "--target", "3", "--top-k", "2"], "--target '3' and --top-k 2 both given"),
        (["--index", "0", "--top-k", "11"], "top_k=11 must be an int from 1"),
        (["--index", "0", "--colormap", "rainbowz"], "colormap='rainbowz' is not a matplotlib colormap"),
        (["--index", "0", "--layers", "seq.9"], "seq.9"),
        (["--image", "nope.png"], "nope.png does not exist"),
        (["--index", "0", "--device", "tpu"], "device='tpu' is not a device"),
    ],
)
def test_cli_explain_bad_input(ckpt, tmp_path, capsys, argv, match):
    assert main(["explain", str(ckpt), "--out", str(tmp_path / "o"), *argv]) == 1
    assert match in capsys.readouterr().err


def test_cli_explain_not_a_checkpoint(tmp_path, capsys):
    assert main(["explain", str(tmp_path), "--index", "0"]) == 1
    assert "is not a camlens checkpoint" in capsys.readouterr().err


TIED = """
import torch
from torch import nn


def build():
    # logits 1e-9 apart (a random-weights zoo model's kind): softmax rounds them to 5 equal probabilities
    model = nn.Sequential(nn.Conv2d(3, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 5))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
        model[3].weight.copy_(torch.tensor([[0.0], [1.0], [3.0], [2.0], [0.0]]) * 1e-9)
        model[3].bias.zero_()
    return model.eval()
"""


def test_the_predicted_class_shown_is_the_one_explained_when_softmax_ties(tmp_path, capsys):
    (tmp_path / "tied.py").write_text(TIED)
    Image.new("RGB", (8, 8), (200, 100, 50)).save(tmp_path / "p.png")
    x = torch.rand(2, 3, 8, 8) + 0.5
    ns: dict = {}
    exec(TIED, ns)
    model = ns["build"]()
    assert torch.softmax(model(x), 1).unique().numel() == 1  # every probability equal: max() would say class 0
    ex = explain_batch(model, x, ["0"])
    assert ex.pred.tolist() == [2, 2] and ex.classes[:, 0].tolist() == [2, 2]
    assert ex.pred_prob.tolist() == pytest.approx([0.2, 0.2])
    argv = ["explain", f"{tmp_path / 'tied.py'}:build", str(tmp_path / "p.png"), "--layers", "0", "--out",
            str(tmp_path / "o"), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "p: predicted: 2 (0.20)" in capsys.readouterr().out
