"""Randomization sanity checks: the user's model is untouched; cascading vs independent; known similarities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from camlens.metrics import layers_from_top, randomized_models, sanity_check


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(3 * 6 * 6, 5),
    ).eval()  # fmt: skip


def snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_layers_from_top_follow_the_call_order_reversed():
    assert layers_from_top(tiny(), torch.rand(1, 1, 6, 6)) == ["5", "2", "0"]


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_randomized_copies_change_the_right_layers_only(mode):
    model = tiny()
    before = snapshot(model)
    order = ["5", "2", "0"]
    seen = []
    for step, (name, copy) in enumerate(randomized_models(model, order, mode, seed=1)):
        changed = {k.split(".")[0] for k, v in copy.state_dict().items() if not torch.equal(v, before[k])}
        seen.append(changed)
        expected = set(order[: step + 1]) if mode == "cascading" else {name}
        assert changed == expected
        assert copy is not model
    assert len(seen) == 3
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sanity_check_leaves_the_model_as_found():
    model = tiny()
    model[0].weight.requires_grad_(False)
    before = snapshot(model)
    hooks = sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())
    res = sanity_check(model, torch.rand(4, 1, 6, 6), "gradcam", "2", mode="cascading", seed=0)
    assert res.layers == ["5", "2", "0"]
    assert res.spearman.shape == res.spearman_abs.shape == res.ssim.shape == (3, 4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and model[0].weight.requires_grad is False
    assert all(p.grad is None for p in model.parameters())
    assert sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules()) == hooks


class WithSpare(nn.Module):
    """The tiny model plus a layer the forward pass never uses."""

    def __init__(self) -> None:
        super().__init__()
        self.net = tiny()
        self.spare = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_randomizing_a_layer_the_map_does_not_see_keeps_similarity_one():
    model = WithSpare().eval()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    # (a map that is constant, e.g. all dead units, has no ranking: its Spearman is NaN by design)
    res = sanity_check(model, x, "gradcam", "net.2", layers=["spare"], seed=0)
    assert res.spearman.tolist() == [[pytest.approx(1.0)] * 3]
    assert res.spearman_abs.tolist() == [[pytest.approx(1.0)] * 3]
    assert res.ssim.tolist() == [[pytest.approx(1.0, abs=1e-6)] * 3]
    # ...while re-initializing the head changes them.
    res = sanity_check(model, x, "gradcam", "net.2", layers=["net.5"], seed=0)
    assert float(res.spearman.mean()) < 0.99
