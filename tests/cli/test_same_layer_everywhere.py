"""One default-layer policy: explain, evaluate, explain-dataset, layers and the Python API choose one layer.

Run on a torchvision-like model (a ResNet with BatchNorm and residual blocks), a transformer-like
one (a ViT with class and register tokens) and Hugging Face's ViT, each given by a factory, with
no --layers anywhere.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

import camlens
from camlens.cli import main
from testmodels import rgb32_dataset

MODELS = {
    "testmodels:small_resnet": "layer4",
    "beyond_models:tiny_vit": "blocks.0",  # the last block's patch tokens never reach the class token
    "beyond_models:hf_vit": "vit.layers.0",  # likewise: the first of its two encoder layers
}
DATA = "testmodels:rgb32_dataset"


def _build(spec: str) -> torch.nn.Module:
    from camlens.sources import load_model

    return load_model(spec, torch.device("cpu"))[0]


def _python_api(spec: str) -> str:
    x = torch.stack([rgb32_dataset()[i][0] for i in range(8)])
    chosen = camlens.choose_layer(_build(spec), x)
    maps = camlens.GradCAM(_build(spec))(x).maps
    assert list(maps) == [chosen]
    return chosen


def _explain(spec: str, tmp_path, capsys) -> str:
    argv = ["explain", spec, "--data", DATA, "--index", "0", "1", "--out", str(tmp_path / "explain"), "--device", "cpu"]
    assert main(argv) == 0
    found = re.search(r"^layers: (\S+) \(automatic choice", capsys.readouterr().out, re.M)
    assert found is not None
    return found.group(1)


def _evaluate(spec: str, tmp_path, capsys) -> str:
    out = tmp_path / "evaluate"
    argv = ["evaluate", spec, "--data", DATA, "--n-images", "8", "--seeds", "0", "--methods", "gradcam",
            "--steps", "4", "--no-sanity", "--no-figures", "--out", str(out), "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    layers = json.loads((out / "evaluation.json").read_text())["config"]["layers"]
    assert len(layers) == 1
    return str(layers[0])


def _explain_dataset(spec: str, tmp_path, capsys) -> str:
    out = tmp_path / "maps"
    argv = ["explain-dataset", "--model", spec, "--data", DATA, "--out", str(out), "--batch-size", "8",
            "--limit", "8", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    layers = json.loads((out / "manifest.json").read_text())["config"]["layers"]
    assert len(layers) == 1
    return str(layers[0])


def _layers(spec: str, tmp_path, capsys) -> str:
    assert main(["layers", spec, "--input-shape", "3,32,32", "--device", "cpu"]) == 0
    found = re.search(r"^automatic choice \(layers=None\): (\S+)$", capsys.readouterr().out, re.M)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("spec", sorted(MODELS))
def test_every_command_and_the_python_api_choose_the_same_layer(spec, tmp_path, capsys):
    chosen = {
        "python": _python_api(spec),
        "explain": _explain(spec, tmp_path, capsys),
        "evaluate": _evaluate(spec, tmp_path, capsys),
        "explain-dataset": _explain_dataset(spec, tmp_path, capsys),
        "layers": _layers(spec, tmp_path, capsys),
    }
    assert chosen == dict.fromkeys(chosen, MODELS[spec])
