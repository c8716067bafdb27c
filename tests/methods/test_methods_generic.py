"""Properties every registered method must have: batch invariance, top-k equivalence, model left as found."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from camlens.methods import METHODS


def gap_model() -> nn.Sequential:
    torch.manual_seed(0)
    return (
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(6, 5),
        )
        .double()
        .eval()
    )


#: the methods that apply to a CNN (these tests' model); the others (LeGrad: ViTs only) have the same
#: checks on their own family's model in their own test file (tests/methods/test_legrad.py).
CNN_METHODS = sorted(n for n, cls in METHODS.items() if "cnn" in cls.families)

#: the layer each method explains in these tests (FullGrad: every bias layer; guided backprop: none).
LAYER = {"fullgrad": None, "guided-backprop": None}


def make(name: str, model: nn.Module):
    layer = LAYER.get(name, "3")
    return METHODS[name](model) if layer is None else METHODS[name](model, layer)


def x_batch(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", CNN_METHODS)
def test_batch_invariance(name: str) -> None:
    model, x = gap_model(), x_batch()
    method = make(name, model)
    whole = method(x, target=[0, 2, 4])
    for i in range(x.shape[0]):
        alone = method(x[i : i + 1], target=[[0, 2, 4][i]])
        for key, m in whole.maps.items():
            torch.testing.assert_close(m[i : i + 1], alone.maps[key], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", CNN_METHODS)
def test_top_k_equals_one_target_at_a_time(name: str) -> None:
    model, x = gap_model(), x_batch()
    method = make(name, model)
    top = method(x, top_k=2)
    assert top.targets is not None and top.targets.shape == (3, 2)
    for j in range(2):
        one = method(x, target=top.targets[:, j])
        for key, m in top.maps.items():
            torch.testing.assert_close(m[:, j], one.maps[key], rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(top.raw[key][:, j], one.raw[key], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", CNN_METHODS)
def test_model_left_as_found(name: str) -> None:
    model, x = gap_model(), x_batch(2)
    model.train()
    model[0].weight.requires_grad_(False)
    hooks_before = sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )
    make(name, model)(x)
    assert model.training and all(m.training for m in model.modules())
    assert not model[0].weight.requires_grad and model[2].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    hooks_after = sum(
        len(m._forward_hooks) + len(m._backward_hooks) + len(m._forward_pre_hooks) for m in model.modules()
    )
    assert hooks_after == hooks_before


@pytest.mark.parametrize("name", CNN_METHODS)
def test_maps_are_normalized_and_finite(name: str) -> None:
    model, x = gap_model(), x_batch(2)
    result = make(name, model)(x)
    for m in result.maps.values():
        assert torch.isfinite(m).all()
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0


def test_registry_names_match_exports() -> None:
    for name, cls in METHODS.items():
        assert cls.name == name
        assert getattr(camlens, cls.__name__) is cls
        assert cls.__doc__ and cls.__doc__.strip()


def test_cli_table_and_docs_come_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    from pathlib import Path

    from camlens.cli import main

    assert main(["methods", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    for name in METHODS:
        assert f"| {name} |" in table
    docs = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    start = docs.index("<!-- methods-table:start -->") + len("<!-- methods-table:start -->")
    end = docs.index("<!-- methods-table:end -->")
    assert docs[start:end].strip() == table, "docs/methods.md is stale: paste `camlens methods --markdown`"


@pytest.mark.parametrize("name", CNN_METHODS)
def test_every_method_satisfies_the_explainer_protocol(name: str) -> None:
    from camlens.methods import CAPABILITIES, Explainer

    cls = METHODS[name]
    for flag in CAPABILITIES:
        assert type(vars_of(cls)[flag]) is bool, f"{cls.__name__}.{flag} must be a bool class attribute"
    assert isinstance(cls.name, str) and cls.name == name
    torch.manual_seed(0)
    strided = nn.Sequential(  # layer "3" is a 4x4 grid for an 8x8 input
        nn.Conv2d(3, 4, 3, padding=1, stride=2), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    ).double().eval()  # fmt: skip
    method = make(name, strided)
    assert isinstance(method, Explainer)
    assert isinstance(method.model, nn.Module) and isinstance(method.layers, dict)
    result = method(x_batch(2), top_k=None)
    assert isinstance(result, camlens.CAMResult)
    # input_sized: the maps live at the input's resolution even before upsampling (raw), not at the layer's
    for raw in result.raw.values():
        assert raw.shape[-2:] == ((8, 8) if cls.input_sized else (4, 4))


def vars_of(cls: type) -> dict[str, object]:
    """The class attributes of ``cls`` and its bases (the nearest definition wins)."""
    out: dict[str, object] = {}
    for base in reversed(cls.__mro__):
        out.update(vars(base))
    return out


@pytest.mark.parametrize("name", CNN_METHODS)
def test_declared_capabilities_match_what_the_constructor_takes(name: str) -> None:
    cls, model, x = METHODS[name], gap_model(), x_batch(2)
    layer = LAYER.get(name, "3")
    if cls.accepts_postprocess:
        plain = cls(model, layer, relu=False, normalize=False, upsample=True)(x)
        assert all(torch.isfinite(m).all() for m in plain.maps.values())
    else:
        with pytest.raises(TypeError):
            cls(model, layer, relu=False, normalize=False, upsample=True)
    if cls.accepts_reshape:
        cls(model, layer, reshape=lambda t: t)(x)
    else:
        with pytest.raises((TypeError, camlens.InputError)):
            cls(model, layer, reshape=lambda t: t)
    uses_backward = cls.uses_gradients
    gradient_free = {"cam", "scorecam", "ablationcam", "eigencam", "sscam", "iscam", "fem", "kpcacam", "random", "dff"}
    assert uses_backward == (name not in gradient_free)


@pytest.mark.parametrize("name", [n for n in CNN_METHODS if n not in LAYER])
def test_no_layer_given_explains_the_automatic_layer(name: str) -> None:
    # Every method takes ``layers=None`` as GradCAM does (README: ``get_method(name)(model)(x)``);
    # Grad-CAM++, Score-CAM, CAM, ... once required the argument and raised a bare TypeError.
    model, x = gap_model(), x_batch(2)
    chosen = camlens.choose_layer(model, x)
    auto = METHODS[name](model)(x, target=[1, 3])
    given = METHODS[name](model, chosen)(x, target=[1, 3])
    assert list(auto.maps) == [chosen]
    torch.testing.assert_close(auto.maps[chosen], given.maps[chosen], rtol=0, atol=0)
