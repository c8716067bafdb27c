"""Smooth and efficient MPRT, random-logit and max-sensitivity against Quantus 0.6.0 (to 1e-5).

Both sides get the same random draws: Quantus is given camlens' explainer (its ``explain_func``,
and ``quantus.explain``, which its ``SmoothMPRT`` calls directly), camlens' randomized models (its
layer generator replaced by :func:`camlens.metrics.randomized_models`) and camlens' noise (numpy's
``randn`` / ``uniform`` / ``randint`` replaced, for the call, by camlens' torch draws, each call's
arguments checked).
"""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.complexity_func import discrete_entropy as quantus_entropy
from quantus.helpers.model.pytorch_model import PyTorchModel
from torch import nn

from camlens.errors import InputError
from camlens.metrics import (
    EXTRA_METRICS,
    discrete_entropy,
    efficient_mprt,
    layers_from_top,
    max_sensitivity,
    random_logit,
    randomized_models,
    score_extra,
    smooth_mprt,
)
from camlens.metrics._explain import method_maps, noise_draws
from testmodels import GapNet, hook_count, seeded

TOL = 1e-5
LAYER = "net.features.2"


class Double(nn.Module):
    """GapNet in float64 that takes any floating input (Quantus feeds float32 to ``predict``)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = seeded(GapNet).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.double())


MODEL = Double().eval()
X = torch.randn(4, 3, 10, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64)  # maps of mixed sign
with torch.no_grad():
    Y = MODEL(X).argmax(dim=1)
BOTTOM_UP = layers_from_top(MODEL, X[:1])[::-1]


def quantus_explain(model, inputs, targets, **kwargs):
    """Quantus' explain_func: camlens' Grad-CAM maps (signed, unnormalized), as numpy."""
    x = torch.as_tensor(np.asarray(inputs), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets)).long()
    return method_maps("gradcam", model, LAYER, 512)(x, y).numpy()


@pytest.fixture
def shared_randomization(monkeypatch):
    """Quantus' layer generator yields camlens' cascading copies (bottom-up, seed 0)."""

    def generator(self, order="top_down", seed=42):
        assert order == "bottom_up"
        yield from randomized_models(self.model, BOTTOM_UP, "cascading", 0)

    monkeypatch.setattr(PyTorchModel, "get_random_layer_generator", generator)
    monkeypatch.setattr(PyTorchModel, "random_layer_generator_length", property(lambda self: len(BOTTOM_UP)))


def test_discrete_entropy_equals_scipy_histogram():
    gen = torch.Generator().manual_seed(0)
    maps = torch.randn(6, 9, 11, generator=gen, dtype=torch.float64)
    maps[1] = torch.round(maps[1] * 4) / 4  # many values on bin edges
    maps[2] = 0.7  # constant: numpy's (a - 0.5, a + 0.5) range
    maps[3, 0, :5] = maps[3].max()  # several at the closed right edge
    for n_bins in (1, 7, 100):
        ref = [quantus_entropy(a=m.numpy(), x=None, n_bins=n_bins) for m in maps]
        assert np.abs(discrete_entropy(maps, n_bins).numpy() - np.asarray(ref)).max() < 1e-12


def test_efficient_mprt_equals_quantus(shared_randomization):
    ref = quantus.EfficientMPRT(layer_order="bottom_up", disable_warnings=True)(
        model=MODEL, x_batch=X.numpy(), y_batch=Y.numpy(), explain_func=quantus_explain, batch_size=len(X)
    )
    got = efficient_mprt(MODEL, X, "gradcam", LAYER, Y, layers=BOTTOM_UP, seed=0)
    assert np.abs(got.rise.numpy() - np.asarray(ref)).max() < TOL
    assert torch.all(got.entropy > 0) and not torch.equal(got.entropy, got.entropy_random)


def test_smooth_mprt_equals_quantus(shared_randomization, monkeypatch):
    samples = 4
    draw = noise_draws(X, 0, "normal", samples - 1)
    z = [draw(s).numpy() for s in range(samples - 1)]
    calls = []

    def randn(*shape):
        assert shape == tuple(X.shape)
        calls.append(shape)
        return z[(len(calls) - 1) % len(z)]  # the same draws for every model, as camlens

    monkeypatch.setattr(np.random, "randn", randn)
    monkeypatch.setattr(quantus, "explain", quantus_explain)
    ref = quantus.SmoothMPRT(layer_order="bottom_up", nr_samples=samples, noise_magnitude=0.1, disable_warnings=True)(
        model=MODEL, x_batch=X.numpy(), y_batch=Y.numpy(), explain_func=quantus_explain, batch_size=len(X)
    )
    got = smooth_mprt(MODEL, X, "gradcam", LAYER, Y, samples=samples, include_clean=True, seed=0)
    assert got.layers == BOTTOM_UP and len(calls) == (samples - 1) * (2 + len(BOTTOM_UP))
    want = np.stack([np.asarray(ref[name]) for name in BOTTOM_UP])
    assert np.abs(got.similarity.numpy() - want).max() < TOL
    assert float(np.abs(np.asarray(ref["original"]) - 1).max()) < 1e-9  # the same noise: identical maps
    last = smooth_mprt(MODEL, X, "gradcam", LAYER, Y, samples=samples, include_clean=True, layerwise=False)
    assert last.layers == BOTTOM_UP[-1:] and torch.allclose(last.last, got.last)


def test_random_logit_equals_quantus(monkeypatch):
    r = torch.randint(0, 4, (len(X),), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 2, 1, 4])  # every case of r + (r >= y)
    calls = []

    def randint(low, high, size):
        assert (low, high, size) == (0, 4, 1)
        calls.append(size)
        return r[len(calls) - 1 : len(calls)].numpy()

    monkeypatch.setattr(np.random, "randint", randint)
    metric = quantus.RandomLogit(num_classes=5, seed=0, disable_warnings=True)
    # one image per call: Quantus divides every map by the max over the whole call
    ref = [
        metric(model=MODEL, x_batch=X[i : i + 1].numpy(), y_batch=y[i : i + 1].numpy(),
               explain_func=quantus_explain, batch_size=1)[0]
        for i in range(len(X))
    ]  # fmt: skip
    got = random_logit(MODEL, X, "gradcam", LAYER, y, similarity="flat_ssim", seed=0)
    assert np.abs(got.similarity.numpy() - np.asarray(ref)).max() < TOL
    assert torch.equal(got.others, r + (r >= y).long()) and not torch.any(got.others == got.classes)


def test_max_sensitivity_equals_quantus(monkeypatch):
    samples, radius = 5, 0.2
    draw = noise_draws(X, 0, "uniform", samples)
    d = [(radius * (2 * draw(s) - 1)).flatten(1).numpy() for s in range(samples)]
    calls = []

    def uniform(low, high, size):
        assert (low, high, tuple(size)) == (-radius, radius, (len(X), X[0].numel()))
        calls.append(size)
        return d[len(calls) - 1]

    monkeypatch.setattr(np.random, "uniform", uniform)
    ref = quantus.MaxSensitivity(nr_samples=samples, lower_bound=radius, disable_warnings=True)(
        model=MODEL, x_batch=X.numpy(), y_batch=Y.numpy(), explain_func=quantus_explain, batch_size=len(X)
    )
    got = max_sensitivity(MODEL, X, "gradcam", LAYER, Y, samples=samples, radius=radius, seed=0)
    assert len(calls) == samples and np.abs(got.numpy() - np.asarray(ref)).max() < TOL
    assert torch.all(got > 0)


def test_maps_blind_to_the_class_or_the_model_fail_the_tests():
    # EigenCAM ignores the class: the random-logit maps are the same map
    for similarity in ("ssim", "flat_ssim"):
        rl = random_logit(MODEL, X, "eigencam", LAYER, similarity=similarity).similarity
        assert torch.allclose(rl.double(), torch.ones(4, dtype=torch.float64), atol=1e-6)
    # the seeded random map ignores the model and the input: no rise, full similarity, no sensitivity
    assert torch.equal(efficient_mprt(MODEL, X, "random", LAYER).rise, torch.zeros(4, dtype=torch.float64))
    last = smooth_mprt(MODEL, X, "random", LAYER, samples=3, layerwise=False).last
    assert torch.allclose(last, torch.ones(4))
    assert torch.equal(max_sensitivity(MODEL, X, "random", LAYER, samples=3), torch.zeros(4, dtype=torch.float64))
    # Grad-CAM depends on both
    assert torch.all(smooth_mprt(MODEL, X, "gradcam", LAYER, samples=3, layerwise=False).last < 0.9)
    assert torch.all(random_logit(MODEL, X, "gradcam", LAYER).similarity < 0.99)


def test_batch_size_does_not_change_values():
    kw = {"target": Y, "seed": 1}
    for fn, extra in (
        (smooth_mprt, {"samples": 3, "layerwise": False}),
        (max_sensitivity, {"samples": 3}),
        (random_logit, {}),
        (efficient_mprt, {}),
    ):
        a = fn(MODEL, X, "gradcam", LAYER, batch_size=1, **kw, **extra)
        b = fn(MODEL, X, "gradcam", LAYER, batch_size=512, **kw, **extra)
        va, vb = (v.similarity if hasattr(v, "similarity") else getattr(v, "rise", v) for v in (a, b))
        assert torch.allclose(va, vb, atol=1e-9, rtol=0)


def test_score_extra_runs_each_metric_by_name():
    got = score_extra(MODEL, X[:2], "gradcam", LAYER, target=Y[:2], seed=2)
    assert list(got) == list(EXTRA_METRICS) and all(v.shape == (2,) for v in got.values())
    assert torch.equal(got["efficient-mprt"], efficient_mprt(MODEL, X[:2], "gradcam", LAYER, Y[:2], seed=2).rise)
    assert torch.equal(got["max-sensitivity"], max_sensitivity(MODEL, X[:2], "gradcam", LAYER, Y[:2], seed=2))
    with pytest.raises(InputError, match=r"no extra metric 'mprt'; choose from efficient-mprt, smooth-mprt"):
        score_extra(MODEL, X, "gradcam", LAYER, ["mprt"])


def test_model_left_as_found():
    model = Double().train()
    model.net.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    smooth_mprt(model, X, "gradcam", LAYER, samples=2)
    efficient_mprt(model, X, "gradcam", model.net.features[2])
    random_logit(model, X, "gradcam", LAYER)
    max_sensitivity(model, X, "gradcam", LAYER, samples=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()) and hook_count(model) == 0


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: smooth_mprt(MODEL, X, "gradcam", LAYER, samples=0), r"samples=0 must be an integer >= 1"),
        (lambda: smooth_mprt(MODEL, X, "gradcam", LAYER, noise=-0.1), r"noise=-0.1 must be a finite number >= 0"),
        (lambda: smooth_mprt(MODEL, X, "gradcam", LAYER, order="sideways"), r"order='sideways' must be one of"),
        (lambda: smooth_mprt(MODEL, X, "gradcam", LAYER, samples=1, include_clean=True), r"samples >= 2"),
        (lambda: efficient_mprt(MODEL, X, "gradcam", LAYER, n_bins=0), r"n_bins=0 must be an integer >= 1"),
        (lambda: efficient_mprt(MODEL, X, "gradcam", LAYER, layers=[]), r"layers=\[\] must be a non-empty list"),
        (lambda: efficient_mprt(MODEL, X, "no-such-cam", LAYER), r"method='no-such-cam': no method"),
        (lambda: efficient_mprt(MODEL, X[0], "gradcam", LAYER), r"x must be a floating image batch"),
        (lambda: random_logit(MODEL, X, "gradcam", LAYER, similarity="l2"), r"similarity='l2' must be one of"),
        (lambda: max_sensitivity(MODEL, X, "gradcam", LAYER, radius=0), r"radius=0 must be a finite number > 0"),
        (lambda: max_sensitivity(MODEL, X, "gradcam", LAYER, samples=2.5), r"samples=2.5 must be an integer"),
        (lambda: efficient_mprt(MODEL, X, "gradcam", nn.Linear(2, 2)), r"not a module of Double; pass its name"),
    ],
)
def test_bad_arguments_raise_camlens_errors(call, message):
    with pytest.raises(InputError, match=message):
        call()
