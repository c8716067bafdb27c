"""Sparseness, effective complexity, pointing-game hits and relevance rank accuracy against Quantus (to 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch

from camlens.errors import InputError
from camlens.metrics.complexity import effective_complexity, pointing_game_hit, relevance_rank_accuracy, sparseness

GEN = torch.Generator().manual_seed(0)
MAPS = torch.randn(12, 9, 11, generator=GEN, dtype=torch.float64)  # signed, continuous: no ties
MASKS = torch.rand(12, 9, 11, generator=GEN) < torch.linspace(0.05, 0.9, 12).view(12, 1, 1)
MASKS[:, 4, 5] = True  # no empty object


def test_sparseness_equals_quantus():
    ref = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True).evaluate_batch(
        x_batch=None, a_batch=MAPS.abs().numpy().copy()
    )
    assert np.abs(sparseness(MAPS).numpy() - np.asarray(ref)).max() < 1e-5


def test_sparseness_by_hand():
    one_hot = torch.zeros(2, 4, 4, dtype=torch.float64)
    one_hot[0, 1, 2] = 3.0
    one_hot[1] = 1.0
    g = sparseness(one_hot)
    assert float(g[0]) == pytest.approx(15 / 16) and float(g[1]) == pytest.approx(0.0, abs=1e-12)
    assert torch.isnan(sparseness(torch.zeros(1, 3, 3)))[0]


def test_effective_complexity_equals_quantus():
    for eps in (1e-5, 0.5, 1.5):
        ref = quantus.EffectiveComplexity(abs=True, normalise=False, eps=eps, disable_warnings=True).evaluate_batch(
            a_batch=MAPS.abs().flatten(1).numpy().copy()
        )
        assert effective_complexity(MAPS, eps=eps).tolist() == list(ref)


def test_pointing_game_hits_equal_quantus():
    ref = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True).evaluate_batch(
        a_batch=MAPS.numpy().copy(), s_batch=MASKS.numpy().copy()
    )
    got = pointing_game_hit(MAPS, MASKS)
    assert got.tolist() == [float(v) for v in ref] and 0 < float(got.sum()) < 12
    empty = torch.zeros(1, 9, 11, dtype=torch.bool)
    assert torch.isnan(pointing_game_hit(MAPS[:1], empty))[0]  # Quantus: True (NaN cast into a bool array)


def test_relevance_rank_accuracy_equals_quantus():
    ref = quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True).evaluate_batch(
        a_batch=MAPS.numpy().copy(), s_batch=MASKS.numpy().copy()
    )
    got = relevance_rank_accuracy(MAPS, MASKS)
    assert np.abs(got.numpy() - np.asarray(ref)).max() < 1e-5
    perfect = relevance_rank_accuracy(MASKS.double() + 0.1 * MAPS.abs() / 10, MASKS)
    assert torch.allclose(perfect, torch.ones(12, dtype=torch.float64))


def test_shapes_are_checked():
    with pytest.raises(InputError, match="mask must have the maps' shape"):
        pointing_game_hit(MAPS, MASKS[:, :3])
