"""Deep Feature Factorization: NMF against scikit-learn, concepts per image or shared, class scores, result type."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import camlens
from camlens.methods.dff import nmf

DT = torch.float64


def gap_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).to(DT).eval()  # fmt: skip


def inputs(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(1))


def sklearn_mu(v: np.ndarray, k: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's multiplicative-update NMF from the same starting point (its 'random' init, our seed)."""
    from sklearn.decomposition import NMF

    gen = torch.Generator().manual_seed(seed)
    w0 = torch.randn(v.shape[0], k, generator=gen, dtype=DT).abs().numpy()
    h0 = torch.randn(k, v.shape[1], generator=gen, dtype=DT).abs().numpy()
    scale = np.sqrt(v.mean() / k)
    model = NMF(k, init="custom", solver="mu", max_iter=iterations, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "maximum number of iterations reached": the point of the comparison
        w = model.fit_transform(v, W=w0 * scale, H=h0 * scale)
    return w, model.components_


def test_nmf_is_scikit_learns_multiplicative_updates() -> None:
    v = torch.rand(2, 6, 20, dtype=DT, generator=torch.Generator().manual_seed(0))
    w, h = nmf(v, 3, iterations=50, seed=7)
    for b in range(2):
        w_ref, h_ref = sklearn_mu(v[b].numpy(), 3, 50, 7)
        np.testing.assert_allclose(w[b].numpy(), w_ref, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(h[b].numpy(), h_ref, rtol=1e-8, atol=1e-12)
    err = (torch.linalg.norm(v - w @ h) / torch.linalg.norm(v)).item()
    assert err < 0.5 and bool((w >= 0).all() and (h >= 0).all())


def test_concepts_scores_and_the_map_shown_per_target() -> None:
    model, x = gap_model(), inputs()
    method = camlens.DeepFeatureFactorization(model, "3", n_concepts=3, classifier="6", iterations=100)
    result = method(x, target=[0, 2, 4])
    assert isinstance(result, camlens.DFFResult)  # kept through the one-target reshaping
    acts = model[:4](x).detach()
    w, h = nmf(acts.flatten(2), 3, iterations=100, seed=0)  # ReLU features: no offset
    torch.testing.assert_close(result.concepts_raw["3"], h.unflatten(2, (8, 8)))
    torch.testing.assert_close(result.concept_vectors["3"], w.transpose(1, 2))
    assert result.concept_scores is not None
    scores = result.concept_scores["3"]
    torch.testing.assert_close(scores, model[6](w.transpose(1, 2)))
    for n, c in enumerate([0, 2, 4]):
        best = int(scores[n, :, c].argmax())
        assert int(result.chosen["3"][n, 0]) == best
        torch.testing.assert_close(result.raw["3"][n], h[n, best].view(8, 8))
    assert result.concepts["3"].shape == (3, 3, 8, 8) and float(result.concepts["3"].amax()) == 1.0


def test_without_a_classifier_the_strongest_concept_is_shown_for_every_target() -> None:
    model, x = gap_model(), inputs()
    result = camlens.DeepFeatureFactorization(model, "3", n_concepts=4)(x, top_k=2)
    w, h = result.concept_vectors["3"], result.concepts_raw["3"].flatten(2)
    strongest = (w.norm(dim=2) * h.norm(dim=2)).argmax(dim=1)
    assert result.concept_scores is None
    assert torch.equal(result.chosen["3"], strongest[:, None].expand(-1, 2))
    torch.testing.assert_close(result.maps["3"][:, 0], result.maps["3"][:, 1])


def test_shared_concepts_factorize_the_batch_jointly() -> None:
    model, x = gap_model(), inputs()
    result = camlens.DeepFeatureFactorization(model, "3", n_concepts=3, shared=True, iterations=60)(x)
    vectors = result.concept_vectors["3"]
    assert torch.equal(vectors[0], vectors[1]) and torch.equal(vectors[1], vectors[2])
    acts = model[:4](x).detach()
    joint = acts.transpose(0, 1).reshape(1, 8, -1)
    w, h = nmf(joint, 3, iterations=60, seed=0)
    torch.testing.assert_close(result.concepts_raw["3"], h.view(3, 3, 8, 8).transpose(0, 1))
    torch.testing.assert_close(vectors[0], w[0].T)
    alone = camlens.DeepFeatureFactorization(model, "3", n_concepts=3, shared=True, iterations=60)(x[:1])
    assert not torch.allclose(alone.concepts_raw["3"][0], result.concepts_raw["3"][0])  # the batch matters


def test_offsets_for_layers_with_negative_values() -> None:
    model, x = gap_model(), inputs()
    pre_relu = camlens.DeepFeatureFactorization(model, "2", n_concepts=2, offset="negative")(x)
    low = model[:3](x).detach().flatten(2).amin(dim=2).clamp_max(0)  # (N, C)
    vectors_minus_offset = pre_relu.concept_vectors["2"] - low[:, None, :]
    assert bool((vectors_minus_offset >= -1e-12).all())
    with pytest.raises(camlens.InputError, match="offset="):
        camlens.DeepFeatureFactorization(model, "3", offset="mean")


def test_reconstructs_as_well_as_pytorch_grad_cams_dff() -> None:
    """NMF has local optima: the two solvers are compared on how well their concepts rebuild the activations."""
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff

    model, x = gap_model(), inputs()
    acts = model[:4](x).detach()
    ours = camlens.DeepFeatureFactorization(model, "3", n_concepts=3, shared=True, offset="min", iterations=400)(x)
    theirs_w, theirs_h = dff(acts.numpy().copy(), n_components=3)  # the core of its DeepFeatureFactorization
    v = acts.transpose(0, 1).reshape(8, -1)
    low = v.amin(dim=1, keepdim=True)
    ours_w = ours.concept_vectors["3"][0].T - low
    ours_h = ours.concepts_raw["3"].transpose(0, 1).reshape(3, -1)
    theirs_wt = torch.from_numpy(theirs_w).to(DT) - low
    theirs_ht = torch.from_numpy(theirs_h).to(DT).transpose(0, 1).reshape(3, -1)
    err_ours = float(torch.linalg.norm(v - low - ours_w @ ours_h) / torch.linalg.norm(v - low))
    err_theirs = float(torch.linalg.norm(v - low - theirs_wt @ theirs_ht) / torch.linalg.norm(v - low))
    assert err_ours < 1.1 * err_theirs + 0.01, (err_ours, err_theirs)
