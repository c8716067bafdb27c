"""The faithfulness runner's forward batch on the CPU: kept near a cache's worth of the largest activation."""

from __future__ import annotations

import torch

from camlens.metrics import _runner, deletion
from camlens.metrics._runner import CPU_BATCH_BYTES, ProbeRunner, largest_activation
from testmodels import SmallConvNet, hook_count, seeded


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
