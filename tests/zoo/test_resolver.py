"""load_model on the zoos: torchvision and timm builders, transformers folders and hub ids, cached and offline
weights, weights files; each with the preprocessing its own configuration records. No network is used."""

from __future__ import annotations

import json
import shutil
from urllib.error import URLError

import pytest
import safetensors.torch
import skimage.data
import timm
import torch
import torch.hub
import transformers
from PIL import Image
from torchvision.models import get_model_weights

from camlens.core.targets import select_output
from camlens.errors import InputError
from camlens.preprocess import Preprocess
from camlens.sources import load_model, resolve_preprocess

CPU = torch.device("cpu")
COFFEE = skimage.data.coffee()  # 400x600 RGB


def _sd_equal(a: torch.nn.Module, b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, b[k]) for k, v in a.state_dict().items())


# --- torchvision ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_with_random_weights_keeps_its_weights_preprocessing(name):
    model, info = load_model(f"torchvision:{name}", CPU, weights="none")
    w = get_model_weights(name).DEFAULT
    t = w.transforms()
    assert info["kind"] == "torchvision" and info["classes"] is None and info["weights"] == "random (--weights none)"
    pre = info["preprocess"]
    assert pre == Preprocess(size=t.resize_size[0], crop=(t.crop_size[0],) * 2, mean=tuple(t.mean),
                             std=tuple(t.std), interpolation=t.interpolation.value)  # fmt: skip
    assert pre.source == f"torchvision weights {w} transforms" and not model.training
    x, geo = pre(COFFEE)
    assert geo.original == (400, 600) and select_output(model(x[None])).shape == (1, 1000)


def _torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # torch.hub.get_dir() follows TORCH_HOME again
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_pretrained_offline_and_not_cached_says_so(tmp_path, monkeypatch):
    checkpoints = _torch_home(tmp_path, monkeypatch)

    def no_network(url, dst, *a, **k):  # what urllib raises on a machine without DNS
        raise URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(InputError) as e:
        load_model("torchvision:resnet18", CPU)
    msg = str(e.value)
    assert msg.startswith(
        "model='torchvision:resnet18': the pretrained weights (torchvision ResNet18_Weights.IMAGENET1K_V1) are not "
        f"in the local cache ({checkpoints}) and could not be downloaded ([Errno -2] Name or service not known); "
        "this machine looks offline."
    )
    assert "Pass --weights none for random weights, or --weights FILE" in msg


def test_torchvision_pretrained_from_the_cache_has_imagenet_classes(tmp_path, monkeypatch):
    checkpoints = _torch_home(tmp_path, monkeypatch)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    w = get_model_weights("resnet18").DEFAULT
    cached = load_model("torchvision:resnet18", CPU, weights="none")[0]
    checkpoints.mkdir(parents=True)
    torch.save(cached.state_dict(), checkpoints / w.url.rsplit("/", 1)[-1])  # where torch.hub keeps it
    model, info = load_model("torchvision:resnet18", CPU)
    assert info["weights"] == f"pretrained {w}" and _sd_equal(model, cached.state_dict())
    assert len(info["classes"]) == 1000 and info["classes"][:2] == ["tench", "goldfish"]


def test_a_weights_file_is_applied_to_a_torchvision_model_and_a_fine_tuned_head_sized(tmp_path):
    src = load_model("torchvision:resnet18", CPU, weights="none")[0]
    safetensors.torch.save_file(src.state_dict(), str(tmp_path / "r18.safetensors"))
    model, info = load_model("torchvision:resnet18", CPU, weights=str(tmp_path / "r18.safetensors"))
    assert _sd_equal(model, src.state_dict()) and info["weights"] == f"file {tmp_path / 'r18.safetensors'}"
    tuned = dict(src.state_dict(), **{"fc.weight": torch.randn(10, 512), "fc.bias": torch.randn(10)})
    torch.save(tuned, tmp_path / "ten.pt")
    model, info = load_model("torchvision:resnet18", CPU, weights=str(tmp_path / "ten.pt"))
    assert model.fc.out_features == 10 and _sd_equal(model, tuned)
    assert info["weights"] == f"file {tmp_path / 'ten.pt'} (10 classes)"
    broken = dict(src.state_dict(), **{"conv1.weight": torch.zeros(64, 1, 7, 7)})  # not a head: refused
    torch.save(broken, tmp_path / "gray.pt")
    with pytest.raises(InputError, match=r"file vs model shapes: conv1.weight \(64, 1, 7, 7\) vs \(64, 3, 7, 7\)"):
        load_model("torchvision:resnet18", CPU, weights=str(tmp_path / "gray.pt"))


def test_random_detectors_do_not_fetch_a_pretrained_backbone(tmp_path, monkeypatch):
    _torch_home(tmp_path, monkeypatch)
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded"))
    model, info = load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", CPU, weights="none")
    assert info["preprocess"] == Preprocess()  # the detector resizes and normalizes inside
    assert type(model).__name__ == "FasterRCNN"


def test_unknown_zoo_names_suggest_close_ones():
    with pytest.raises(InputError, match="torchvision has no model 'resnet181'; did you mean resnet18"):
        load_model("torchvision:resnet181", CPU, weights="none")
    with pytest.raises(InputError, match="timm has no model 'resnet10x'; did you mean resnet10t"):
        load_model("timm:resnet10x", CPU, weights="none")


# --- timm -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet10t", "vit_tiny_patch16_224"])
def test_timm_with_random_weights_uses_its_data_config(name):
    model, info = load_model(f"timm:{name}", CPU, weights="none")
    cfg = timm.data.resolve_model_data_config(model)
    pre = info["preprocess"]
    side = cfg["input_size"][-1]
    assert pre == Preprocess(size=int(side / cfg["crop_pct"]), crop=(side, side), mean=cfg["mean"], std=cfg["std"],
                             interpolation=cfg["interpolation"])  # fmt: skip
    assert info["kind"] == "timm" and info["classes"] is None
    # timm's own eval transform on the same photo: the same geometry, values within Pillow's 8-bit rounding
    ref = timm.data.create_transform(**cfg)(Image.fromarray(COFFEE))
    x, _ = pre(COFFEE)
    assert x.shape == ref.shape and float((x - ref).abs().mean()) < 0.5 / 255 / min(cfg["std"])
    assert select_output(model(x[None])).shape == (1, 1000)


def test_timm_pretrained_offline_and_not_cached_says_so(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("camlens.zoo.timm.reachable", lambda url, timeout=3.0: False)  # the network probe
    with pytest.raises(InputError) as e:
        load_model("timm:resnet10t", CPU)
    assert str(e.value).startswith(
        f"model='timm:resnet10t': the pretrained weights (timm resnet10t) are not in the local cache (Hugging Face "
        f"cache {tmp_path / 'hub'}) and could not be downloaded ({hub.ENDPOINT} cannot be reached); this machine "
        "looks offline. Pass --weights none"
    )
    assert not hub.HF_HUB_OFFLINE  # the cache-only attempt did not leak


def test_timm_weights_from_a_file_with_a_fine_tuned_head(tmp_path):
    src = timm.create_model("resnet10t")
    torch.save({"state_dict": src.state_dict(), "epoch": 1}, tmp_path / "ckpt.pth")
    model, _ = load_model("timm:resnet10t", CPU, weights=str(tmp_path / "ckpt.pth"))
    assert _sd_equal(model, src.state_dict())
    tuned = timm.create_model("resnet10t", num_classes=3)
    safetensors.torch.save_file(tuned.state_dict(), str(tmp_path / "three.safetensors"))
    model, info = load_model("timm:resnet10t", CPU, weights=str(tmp_path / "three.safetensors"))
    assert model.num_classes == 3 and _sd_equal(model, tuned.state_dict()) and info["weights"].endswith("(3 classes)")


# --- transformers -----------------------------------------------------------------------------------------------

LABELS = {0: "cat", 1: "dog", 2: "fox"}


def _vit_folder(path, processor=True):
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=37, id2label=LABELS,
                                 label2id={v: k for k, v in LABELS.items()})  # fmt: skip
    model = transformers.ViTForImageClassification(cfg).eval()
    model.save_pretrained(path)
    if processor:
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return model


def test_a_save_pretrained_vit_folder_loads_with_labels_and_its_processor(tmp_path):
    saved = _vit_folder(tmp_path / "vit")
    model, info = load_model(str(tmp_path / "vit"), CPU)
    assert info["kind"] == "hf" and info["classes"] == ["cat", "dog", "fox"]
    assert _sd_equal(model, saved.state_dict()) and info["weights"] == f"saved weights in {tmp_path / 'vit'}"
    pre = info["preprocess"]
    assert pre == Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.5,) * 3)
    assert pre.source == "transformers image processor ViTImageProcessor"
    proc = transformers.AutoImageProcessor.from_pretrained(tmp_path / "vit")
    ref = proc(images=Image.fromarray(COFFEE), return_tensors="pt")["pixel_values"][0]
    x, _ = pre(COFFEE)
    assert float((x - ref).abs().max()) < 2.01 / 255 / 0.5  # Pillow vs torch resize: within two grey levels
    with torch.no_grad():
        torch.testing.assert_close(select_output(model(x[None])), saved(x[None]).logits)
    random, info = load_model(str(tmp_path / "vit"), CPU, weights="none")
    assert info["classes"] == ["cat", "dog", "fox"] and not _sd_equal(random, saved.state_dict())


def test_a_folder_without_a_processor_takes_the_config_s_size_and_a_tiny_swin_loads(tmp_path):
    _vit_folder(tmp_path / "bare", processor=False)
    pre = load_model(str(tmp_path / "bare"), CPU)[1]["preprocess"]
    assert pre == Preprocess(size=(32, 32)) and "no image processor saved" in pre.source
    cfg = transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2],
                                  window_size=4, num_labels=4)  # fmt: skip
    transformers.SwinForImageClassification(cfg).save_pretrained(tmp_path / "swin")
    model, info = load_model(str(tmp_path / "swin"), CPU)
    assert info["classes"] is None  # LABEL_0..LABEL_3 are no names
    x, _ = resolve_preprocess(info)(COFFEE)
    assert x.shape == (3, 32, 32) and select_output(model(x[None])).shape == (1, 4)


def _fake_hub_cache(root, repo, folder):
    """The layout huggingface_hub writes: models--ORG--NAME/{refs/main, snapshots/REV/...}."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    shutil.copytree(folder, base / "snapshots" / rev)


def test_hf_ids_come_from_the_local_cache_only(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(InputError) as e:
        load_model("hf:someone/tiny-vit", CPU)
    assert str(e.value).startswith(f"model='hf:someone/tiny-vit': 'someone/tiny-vit' is not in the local Hugging "
                                   f"Face cache ({tmp_path / 'hub'}); camlens does not download models")  # fmt: skip
    saved = _vit_folder(tmp_path / "vit")
    _fake_hub_cache(tmp_path / "hub", "someone/tiny-vit", tmp_path / "vit")
    model, info = load_model("hf:someone/tiny-vit", CPU)
    assert _sd_equal(model, saved.state_dict()) and info["classes"] == ["cat", "dog", "fox"]
    assert info["preprocess"].size == (32, 32) and info["spec"] == "hf:someone/tiny-vit"


def test_a_transformers_model_that_is_not_an_image_classifier_is_refused(tmp_path):
    (tmp_path / "bert").mkdir()
    transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8,
                            vocab_size=10).save_pretrained(tmp_path / "bert")  # fmt: skip
    with pytest.raises(InputError, match="is a BertConfig, not an image classifier"):
        load_model(str(tmp_path / "bert"), CPU, weights="none")


def test_preprocess_is_json_ready_for_every_zoo(tmp_path):
    _vit_folder(tmp_path / "vit")
    for spec in ("torchvision:resnet18", "timm:resnet10t", str(tmp_path / "vit")):
        pre = load_model(spec, CPU, weights="none")[1]["preprocess"]
        assert Preprocess.from_dict(json.loads(json.dumps(pre.to_dict()))) == pre


def test_model_from_args_prints_the_preprocessing(tmp_path, capsys):
    import argparse

    from camlens.cli._model_args import add_model_arguments, model_from_args, parse_size

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    add_model_arguments(parser)
    args = parser.parse_args(["timm:resnet10t", "--weights", "none", "--crop", "160", "--mean", "0.5", "--std", "0.5"])
    _, info, pre = model_from_args(args, CPU)
    assert pre == Preprocess(size=201, crop=(160, 160), mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="bicubic")
    assert info["preprocess"] is pre
    assert capsys.readouterr().out == (
        "preprocess: resize shorter side to 201 (bicubic), centre crop 160x160, RGB, mean (0.5, 0.5, 0.5) "
        "std (0.5, 0.5, 0.5) [timm data config of resnet10t, with flags (crop, mean, std)]\n"
    )
    bad = parser.parse_args(["timm:resnet10t", "--weights", "none", "--size", "20y"])
    with pytest.raises(InputError, match="--size '20y' is not a size: give N or HxW"):
        model_from_args(bad, CPU)
    assert parse_size("224x320") == (224, 320) and parse_size("224,320") == (224, 320) and parse_size("7") == 7


def test_a_convnext_processor_s_crop_pct_becomes_resize_then_crop(tmp_path):
    cfg = transformers.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=2)
    transformers.ConvNextForImageClassification(cfg).save_pretrained(tmp_path / "cnx")
    transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.5).save_pretrained(tmp_path / "cnx")
    model, info = load_model(str(tmp_path / "cnx"), CPU)
    pre = info["preprocess"]
    proc = transformers.AutoImageProcessor.from_pretrained(tmp_path / "cnx")
    assert pre == Preprocess(size=128, crop=(64, 64), mean=tuple(proc.image_mean), std=tuple(proc.image_std),
                             interpolation="bicubic")  # fmt: skip
    ref = proc(images=Image.fromarray(COFFEE), return_tensors="pt")["pixel_values"][0]
    x, geo = pre(Image.fromarray(COFFEE))
    assert x.shape == ref.shape == (3, 64, 64) and geo.resized == (128, 192)
    assert float((x - ref).abs().mean()) < 1 / 255 / min(proc.image_std)  # its own resize: under a grey level
    weights = {k: v + 1 for k, v in model.state_dict().items() if v.is_floating_point()}
    weights.update({k: v for k, v in model.state_dict().items() if not v.is_floating_point()})
    safetensors.torch.save_file(weights, str(tmp_path / "w.safetensors"))
    again, _ = load_model(str(tmp_path / "cnx"), CPU, weights=str(tmp_path / "w.safetensors"))
    assert _sd_equal(again, weights)


def test_a_grayscale_factory_gets_one_channel_by_default(tmp_path):
    f = tmp_path / "gray_models.py"
    f.write_text("from testmodels import SmallConvNet\n\n\ndef build():\n    return SmallConvNet()\n")
    model, info = load_model(f"{f}:build", CPU)
    pre = resolve_preprocess(info, size=(10, 10))
    assert info["in_channels"] == 1 and pre == Preprocess(size=(10, 10), channels=1)
    x, _ = pre(COFFEE)
    assert x.shape == (1, 10, 10) and model(x[None]).shape[0] == 1


def test_the_network_probe_dials_the_host_unless_a_proxy_is_set(monkeypatch):
    import socket

    from camlens.zoo.weights import reachable

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert reachable(f"http://127.0.0.1:{port}/models")
    assert not reachable(f"http://127.0.0.1:{port}/models", timeout=1.0)  # closed now
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert reachable(f"http://127.0.0.1:{port}/models")
