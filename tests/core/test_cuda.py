"""On a CUDA machine: every registered method gives the CPU's maps, and the engine stays on the device."""

from __future__ import annotations

import pytest
import torch

import camlens
from models import resnet_small

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU in this environment (runs on a lent GPU)"
)

LAYERS = {"fullgrad": None, "cam": "layer4"}  # CAM needs the layer under the GAP + linear head


@needs_cuda
@pytest.mark.parametrize("name", sorted(camlens.METHODS))
def test_every_method_on_cuda_matches_cpu(name):
    torch.manual_seed(0)
    model = resnet_small(num_classes=10).eval()
    x = torch.rand(4, 3, 64, 64)
    layers = LAYERS.get(name, "layer3")
    kwargs = {"layers": layers} if layers is not None else {}
    cpu = camlens.get_method(name)(model, **kwargs)(x, top_k=2)
    gpu_model = model.to("cuda")
    # cuDNN's default TF32 convolutions round to 10-bit mantissas (map differences ~1e-2): compare in float32.
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gpu = camlens.get_method(name)(gpu_model, **kwargs)(x.to("cuda"), top_k=2)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
    assert torch.equal(cpu.targets, gpu.targets.cpu())
    for key, m in cpu.maps.items():
        assert gpu.maps[key].device.type == "cuda"
        torch.testing.assert_close(gpu.maps[key].cpu(), m, atol=2e-3, rtol=2e-3)


@needs_cuda
def test_cuda_peak_memory_is_below_a_plain_forward_with_autograd():
    model = resnet_small(num_classes=10).cuda().eval()
    x = torch.rand(32, 3, 128, 128, device="cuda")
    cam = camlens.GradCAM(model, layers="layer4")
    cam(x)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    cam(x)
    ours = torch.cuda.max_memory_allocated() - base
    torch.cuda.reset_peak_memory_stats()
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    torch.autograd.grad(out.max(1).values.sum(), xg)
    plain = torch.cuda.max_memory_allocated() - base
    assert ours < plain / 2, (ours, plain)
    assert all(p.grad is None for p in model.parameters())
