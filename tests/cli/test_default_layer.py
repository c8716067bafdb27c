"""One default-layer policy: every command explains the layer `camlens.choose_layer` picks, and says which."""

from __future__ import annotations

import json

import torch

import camlens
from camlens._util.lock import LOCK_NAME
from camlens.cli import main
from testmodels import rgb32_dataset, small_resnet

MODEL, DATA = "testmodels:small_resnet", "testmodels:rgb32_dataset"


def _items(ids: list[int]) -> torch.Tensor:
    ds = rgb32_dataset()
    return torch.stack([ds[i][0] for i in ids])


def test_explain_on_a_torchvision_like_resnet_uses_and_prints_the_automatic_layer(tmp_path, capsys):
    expected = camlens.choose_layer(small_resnet(), _items([0, 1, 2]))
    assert expected == "layer4"  # the last block's output, after BN, the residual add and ReLU
    argv = ["explain", MODEL, "--data", DATA, "--index", "0", "1", "2", "--out", str(tmp_path), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"layers: {expected} (automatic choice;" in out
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_NAME)
    assert written == ["explain.html", "grid.png", "test-00000.png", "test-00001.png", "test-00002.png"]
    pred = small_resnet()(_items([0])).argmax(1)
    first = next(line for line in out.splitlines() if line.startswith("true:"))
    assert first.startswith(f"true: 0 · predicted: {int(pred[0])} (")  # no class names: indices


def test_explain_dataset_on_a_torchvision_like_resnet_records_the_automatic_layer(tmp_path, capsys):
    expected = camlens.choose_layer(small_resnet(), _items(list(range(8))))  # the run's first batch
    assert expected == "layer4"
    argv = ["explain-dataset", "--model", MODEL, "--data", DATA, "--out", str(tmp_path), "--batch-size", "8",
            "--shard-size", "8", "--limit", "16", "--no-progress", "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    assert f"layers: {expected} (automatic: camlens.choose_layer on items 0..7)" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["layers"] == [expected]
    assert manifest["layer_choice"] == "automatic: camlens.choose_layer on items 0..7"
    results = camlens.open_results(tmp_path)
    assert results.map_keys == [f"gradcam/{expected}"] and results[3].maps[f"gradcam/{expected}"].shape == (4, 4)
