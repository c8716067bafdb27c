"""The faithfulness runner on the CPU: a forward batch near a cache's worth of the largest activation, and the
optimized copy of the model the batched metrics run their passes through."""

from __future__ import annotations

import pytest
import torch

from camlens.errors import InputError
from camlens.metrics import _runner, batched, deletion
from camlens.metrics._runner import CPU_BATCH_BYTES, ProbeRunner, largest_activation
from camlens.metrics.batched import faithfulness
from testmodels import SmallConvNet, SmallResNet, hook_count, seeded


def test_largest_activation_is_the_widest_module_output_and_leaves_no_hook():
    model = seeded(SmallConvNet)
    x = torch.rand(1, 1, 10, 10)
    outputs = []
    handles = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o.numel() * 4)) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    assert largest_activation(model, x) == max(outputs)
    assert hook_count(model) == 0


def test_cpu_batch_is_capped_by_the_largest_activation(monkeypatch):
    model = seeded(SmallConvNet)
    x = torch.rand(64, 1, 10, 10)
    per_image = largest_activation(model, x[:1])
    monkeypatch.setattr(_runner, "CPU_BATCH_BYTES", 10 * per_image)
    assert ProbeRunner(model, x, torch.zeros(64, dtype=torch.long), batch_size=512).batch_size == 10
    monkeypatch.setattr(_runner, "CPU_BATCH_BYTES", per_image)  # never under 4 images
    assert ProbeRunner(model, x, torch.zeros(64, dtype=torch.long), batch_size=512).batch_size == 4
    assert ProbeRunner(model, x, torch.zeros(64, dtype=torch.long), batch_size=2).batch_size == 2
    assert CPU_BATCH_BYTES == 32 * 2**20


def test_the_cap_does_not_change_the_values(monkeypatch):
    model = seeded(SmallConvNet)
    x = torch.rand(6, 1, 10, 10, generator=torch.Generator().manual_seed(1))
    maps = torch.rand(6, 10, 10, generator=torch.Generator().manual_seed(2))
    wide = deletion(model, x, maps, steps=8, batch_size=512)
    monkeypatch.setattr(_runner, "CPU_BATCH_BYTES", 1)  # 4 images per pass
    narrow = deletion(model, x, maps, steps=8, batch_size=512)
    torch.testing.assert_close(narrow.auc, wide.auc, rtol=0, atol=1e-6)
    torch.testing.assert_close(narrow.curves, wide.curves, rtol=0, atol=1e-6)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_faithfulness_through_the_optimized_copy_equals_the_model():
    model = seeded(SmallResNet)
    with torch.no_grad():  # BatchNorm statistics away from the identity, so folding them matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        model.fc.weight.mul_(40)  # confident predictions: curves that move
    before = _state(model)
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    maps = {"a": torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(2))}
    built = []
    real = batched.InferenceCopy.module

    def spy(self, *args, **kwargs):
        built.append(real(self, *args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batched.InferenceCopy, "module", spy)
        c1, fast = faithfulness(model, x, maps, steps=8, percentages=(0.2, 0.6), optimize=True)
    assert len(built) == 1 and built[0] is not model  # the passes ran through the copy
    c2, plain = faithfulness(model, x, maps, steps=8, percentages=(0.2, 0.6), optimize=False)
    assert torch.equal(c1, c2)
    for name in ("deletion", "insertion", "morf", "lerf", "full", "masked"):
        torch.testing.assert_close(getattr(fast["a"], name), getattr(plain["a"], name), rtol=0, atol=1e-5)
    assert float((fast["a"].deletion[:, 1:-1] - fast["a"].deletion[:, :1]).abs().max()) > 0.01  # they move
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before) and hook_count(model) == 0


def test_faithfulness_optimize_true_says_why_it_cannot():
    model = seeded(SmallResNet).train()
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match="training mode"):
        faithfulness(model, x, {"a": torch.rand(2, 32, 32)}, steps=4, percentages=(0.5,), optimize=True)
