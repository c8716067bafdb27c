"""`camlens layers` on zoo specs: the input shape comes from the model's own preprocessing."""

from __future__ import annotations

import torch

import camlens
from camlens.cli import main


def test_layers_on_torchvision_resnet18_probes_the_weights_crop_and_marks_the_automatic_layer(capsys):
    assert main(["layers", "torchvision:resnet18", "--weights", "none", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("input (1, 3, 224, 224);")
    auto = [line.split()[0] for line in out.splitlines() if line.endswith("<- auto")]
    import torchvision

    model = torchvision.models.resnet18(weights=None).eval()
    assert auto == [camlens.choose_layer(model, torch.rand(1, 3, 224, 224))] == ["layer4"]
    assert out.splitlines()[-1] == "automatic choice (layers=None): layer4"


def test_layers_refuses_random_weights_for_a_factory(capsys):
    assert main(["layers", "testmodels:small_resnet", "--weights", "none", "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "InputError: weights='none' is for zoo models" in err and "omit --weights" in err
