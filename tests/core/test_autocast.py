"""Maps under torch.autocast agree with float32 maps within the documented tolerance (docs/guide.md).

Tolerance on normalized maps (values in [0, 1]), per image, over several seeds:
largest absolute difference <= 0.15 and mean absolute difference <= 0.02.
Measured on CPU bfloat16 (benchmarks/autocast_agreement.py, 5 seeds x 8 images):
largest 0.085 (ConvNet), mean <= 0.0093. The CUDA tests run only where a GPU exists.
"""

from __future__ import annotations

import pytest
import torch

import camlens
from beyond_models import SwinLike, TinyViT, hf_vit
from camlens.demo.models import ConvNet

MAX_ABS = 0.15
MEAN_ABS = 0.02

CASES = {
    "convnet": (lambda: ConvNet().eval(), "seq.4", (1, 28, 28)),
    "tinyvit": (lambda: TinyViT().eval(), "blocks.0", (3, 32, 32)),
    "swinlike": (lambda: SwinLike().eval(), "stages.1", (3, 32, 32)),
    "hf-vit": (hf_vit, "vit.layers.0", (3, 32, 32)),
}


def _agreement(name: str, device: str, dtype: torch.dtype, seeds: int = 2) -> tuple[float, float]:
    make, layer, shape = CASES[name]
    worst, mean = 0.0, 0.0
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = make().to(device)
        x = torch.rand(4, *shape, device=device)
        cam = camlens.GradCAM(model, layer)
        ref = cam(x)
        with torch.autocast(device, dtype=dtype):
            amp = cam(x, target=ref.targets)
        assert amp.logits.dtype == dtype  # the model really ran in reduced precision
        assert amp.map.dtype == torch.float32  # maps are combined and normalized in float32
        d = (amp.map - ref.map).abs()
        worst, mean = max(worst, float(d.max())), max(mean, float(d.mean()))
    return worst, mean


@pytest.mark.parametrize("name", list(CASES))
def test_cpu_bfloat16_maps_agree_with_float32(name):
    worst, mean = _agreement(name, "cpu", torch.bfloat16)
    assert worst <= MAX_ABS, f"{name}: max |bf16 - fp32| = {worst:.4f}"
    assert mean <= MEAN_ABS, f"{name}: mean |bf16 - fp32| = {mean:.4f}"
    assert worst > 0  # the comparison is not vacuous: bf16 does change the maps


def test_autocast_state_is_left_as_found():
    torch.manual_seed(0)
    model = ConvNet().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        camlens.GradCAM(model, "seq.4")(torch.rand(1, 1, 28, 28))
        assert torch.is_autocast_enabled("cpu")
    assert not torch.is_autocast_enabled("cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU in this environment (runs on a lent GPU)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_autocast_maps_agree_with_float32(name, dtype):
    worst, mean = _agreement(name, "cuda", dtype)
    print(f"cuda {name} {dtype}: max {worst:.4f} mean {mean:.4f}")
    assert worst <= MAX_ABS, f"{name} {dtype}: max |amp - fp32| = {worst:.4f}"
    assert mean <= MEAN_ABS, f"{name} {dtype}: mean |amp - fp32| = {mean:.4f}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU in this environment (runs on a lent GPU)")
def test_cuda_token_maps_equal_hand_reshape():
    model = hf_vit().cuda()
    x = torch.rand(2, 3, 32, 32, device="cuda")
    layer = "vit.layers.1.layernorm_before"
    auto = camlens.GradCAM(model, layer)(x)
    hand = camlens.GradCAM(model, layer, reshape=lambda t: t[:, 1:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2))(x)
    torch.testing.assert_close(auto.maps[layer], hand.maps[layer], atol=1e-6, rtol=0)
    assert auto.map.device.type == "cuda"
