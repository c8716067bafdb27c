"""How many items evaluate draws from a dataset when it is not told: 500, or all of a smaller one."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from camlens.errors import InputError
from camlens.evaluation.specs import DEFAULT_N_IMAGES, draw


def items(n: int) -> TensorDataset:
    return TensorDataset(torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.arange(n) % 3)


def test_default_draws_every_item_of_a_small_dataset():
    images, labels, idx = draw(items(4), None, 0)
    assert sorted(idx) == [0, 1, 2, 3]
    assert images.flatten().tolist() == [float(i) for i in idx]
    assert labels is not None and labels.tolist() == [i % 3 for i in idx]


def test_default_draws_500_of_a_larger_dataset_the_same_as_asking_for_500():
    assert DEFAULT_N_IMAGES == 500
    _, _, idx = draw(items(700), None, 1)
    assert len(idx) == 500 and len(set(idx)) == 500
    assert idx == draw(items(700), 500, 1)[2]


def test_asking_for_more_than_the_dataset_holds_is_still_an_error():
    with pytest.raises(InputError, match=r"n_images=5 must be an int from 1 to 4"):
        draw(items(4), 5, 0)
