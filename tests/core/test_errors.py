"""Every user mistake gets one clear camlens error, and the model is left unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import camlens
from testmodels import SmallConvNet, hook_count


@pytest.fixture
def model():
    return SmallConvNet().eval()


@pytest.fixture
def x():
    return torch.rand(2, 1, 10, 10)


def test_unknown_layer_lists_near_matches_and_candidates(model):
    with pytest.raises(camlens.LayerNotFoundError) as e:
        camlens.GradCAM(model, layers="seq.66")
    msg = str(e.value)
    assert "no layer 'seq.66' in SmallConvNet" in msg
    assert "did you mean 'seq.6'" in msg
    assert "seq.0, seq.3, seq.6" in msg
    assert isinstance(e.value, camlens.CamlensError) and isinstance(e.value, LookupError)


def test_module_that_is_not_a_submodule(model):
    with pytest.raises(camlens.LayerNotFoundError, match="not a submodule of SmallConvNet"):
        camlens.GradCAM(model, layers=nn.Conv2d(1, 1, 1))
    with pytest.raises(camlens.LayerNotFoundError, match="the model itself"):
        camlens.GradCAM(model, layers=model)
    with pytest.raises(camlens.LayerNotFoundError, match="at least one"):
        camlens.GradCAM(model, layers=[])


def test_a_layer_given_as_an_int_names_the_string_to_give(model):
    # Before: layers=6 (a Sequential's index) failed with TypeError: 'int' object is not iterable.
    for layers in (6, [6]):
        with pytest.raises(camlens.LayerNotFoundError, match=r"^layers got 6 of type int \(did you mean '6'\?\)"):
            camlens.GradCAM(model.seq, layers=layers)
    with pytest.raises(camlens.LayerNotFoundError, match=r"^layers got 1.5 of type float; expected a layer name"):
        camlens.get_method("scorecam")(model, 1.5)


def test_an_unknown_method_name_is_a_camlens_error_that_names_the_registered_ones():
    # Before: a bare KeyError (quoted message, not a CamlensError), "no method 'x' Registered: ..." without a
    # full stop, and an AttributeError for a name that is not a string.
    with pytest.raises(camlens.MethodNotFoundError) as e:
        camlens.get_method("gradcam+++")
    assert isinstance(e.value, KeyError) and isinstance(e.value, camlens.CamlensError)
    assert str(e.value).startswith("no method 'gradcam+++'; did you mean gradcam++, gradcam")
    assert str(e.value).endswith(", ".join(sorted(camlens.METHODS)))
    with pytest.raises(camlens.MethodNotFoundError, match=r"^no method 'zzz'\. Registered: "):
        camlens.get_method("zzz")
    with pytest.raises(camlens.MethodNotFoundError, match=r"^no method 7\. Registered: "):
        camlens.get_method(7)  # type: ignore[arg-type]
    assert camlens.get_method("GradCAM++") is camlens.GradCAMPlusPlus


def test_layer_passed_as_module_is_named(model, x):
    r = camlens.GradCAM(model, layers=[model.seq[6]])(x)
    assert list(r.maps) == ["seq.6"]


def test_layer_the_target_does_not_depend_on(x):
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(1, 2, 3, padding=1)
            self.fc = nn.Linear(200, 3)

        def forward(self, x):
            self.b(x)  # computed, but the output does not use it
            return self.fc(self.a(x).flatten(1))

    m = TwoHeads().eval()
    with pytest.raises(camlens.LayerNotUsedError, match=r"do not depend on layer\(s\) \['b'\]"):
        camlens.GradCAM(m, layers=["a", "b"])(x)
    m.requires_grad_(False)  # frozen: the lazy and the eager pass both find no path
    with pytest.raises(camlens.LayerNotUsedError, match="do not depend on"):
        camlens.GradCAM(m, layers="b")(x)
    assert hook_count(m) == 0


def test_layer_not_called(x):
    class Skip(SmallConvNet):
        def forward(self, x):
            return self.seq[-1](torch.zeros(x.shape[0], 400))

    with pytest.raises(camlens.LayerNotUsedError, match="not called in the forward pass"):
        camlens.GradCAM(Skip(), layers="seq.0")(x)


@pytest.mark.parametrize(
    ("target", "top_k", "pattern"),
    [
        (7, None, "target class 7 is out of range for a model with 7 classes; use 0..6"),
        (-1, None, "target class -1 is out of range"),
        ([1, 2, 3], None, r"target has shape \(3,\) but the batch has N=2"),
        (torch.zeros(2, 2, 2, dtype=torch.long), None, r"shape \(2, 2, 2\)"),
        (torch.tensor([0.5, 1.0]), None, "integer class indices"),
        (True, None, "is a bool"),
        ("cat", None, "not a class index"),
        (1, 2, "give target or top_k, not both"),
        (None, 0, "top_k=0 must be an int from 1"),
        (None, 8, "top_k=8 must be an int from 1 to the number of classes \\(7\\)"),
        (lambda logits: logits[0], None, r"must return a tensor of shape \(N,\) or \(N, K\) with N=2, got \(7,\)"),
    ],
)
def test_bad_targets(model, x, target, top_k, pattern):
    before = hook_count(model)
    with pytest.raises(camlens.TargetError, match=pattern):
        camlens.GradCAM(model, layers="seq.6")(x, target=target, top_k=top_k)
    assert hook_count(model) == before


def test_layer_output_not_spatial_says_how_to_reshape(model, x):
    with pytest.raises(camlens.LayerShapeError, match=r"layer 'seq.8' outputs shape \(2, 400\).*reshape=fn"):
        camlens.GradCAM(model, layers="seq.8")(x)
    # with a reshape function the same layer works
    r = camlens.GradCAM(model, layers="seq.8", reshape=lambda t: t.view(t.shape[0], 4, 10, 10))(x)
    ref = camlens.GradCAM(model, layers="seq.7")(x)
    assert torch.allclose(r.maps["seq.8"], ref.maps["seq.7"], atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
def test_input_on_another_device(x):
    model = SmallConvNet().to("cuda")
    with pytest.raises(camlens.InputError, match=r"x is on cpu but SmallConvNet is on cuda:0.*x.to\('cuda:0'\)"):
        camlens.GradCAM(model, layers="seq.6")(x)


def test_model_on_the_meta_device(x):
    # Was the stand-in for "another device", advising x.to('meta'), which then failed inside torch:
    # a meta model has no values to explain (issue 11); test_bad_inputs.py has the other meta cases.
    model = SmallConvNet().to("meta")
    with pytest.raises(camlens.InputError, match=r"SmallConvNet is on the meta device.*model.to_empty\(device='cpu'\)"):
        camlens.GradCAM(model, layers="seq.6")(x)


def test_non_tensor_input(model):
    with pytest.raises(camlens.InputError, match=r"x must be a torch.Tensor"):
        camlens.GradCAM(model, layers="seq.6")([[0.0]])


def test_output_without_scores(x):
    class Weird(SmallConvNet):
        def forward(self, x):
            return {"features": self.seq(x)}

    with pytest.raises(camlens.TargetError, match="output='key'"):
        camlens.GradCAM(Weird(), layers="seq.6")(x)
    r = camlens.GradCAM(Weird(), layers="seq.6", output="features")(x)
    assert r.logits.shape == (2, 7)


def test_bad_fuse_and_model_arguments(model):
    with pytest.raises(camlens.InputError, match="fuse='sum' is not one of"):  # a ValueError too
        camlens.GradCAM(model, layers="seq.6", fuse="sum")
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module"):
        camlens.GradCAM("resnet", layers="seq.6")
