"""camlens Grad-CAM agrees with Captum's LayerGradCam, an independent implementation."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam

import camlens
from camlens.core.ops import minmax_normalize
from models import resnet_small
from testmodels import GapNet, SmallConvNet


def _cases():
    torch.manual_seed(1)
    yield "convnet", SmallConvNet().eval(), ["seq.6", "seq.3", "seq.0"], torch.rand(4, 1, 10, 10)
    yield "convnet-bn", SmallConvNet(bn=True).eval(), ["seq.6", "seq.3"], torch.rand(3, 1, 10, 10)
    yield "gap", GapNet().eval(), ["features.2", "features.0"], torch.rand(4, 3, 9, 9)
    resnet = resnet_small(num_classes=10).eval()
    yield "resnet", resnet, ["layer4", "layer3", "layer2.1.conv2"], torch.rand(2, 3, 64, 64)


@pytest.mark.parametrize(
    ("name", "model", "layers", "x"), list(_cases()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_matches_captum_layer_gradcam(name, model, layers, x):
    # BatchNorm statistics are random-ish so that maps are not trivially zero
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    raw = camlens.GradCAM(model, layers=layers, upsample=False, normalize=False)(x, target=3)
    linear = camlens.GradCAM(model, layers=layers, relu=False, upsample=False, normalize=False)(x, target=3)
    full = camlens.GradCAM(model, layers=layers)(x, target=3)
    for layer in layers:
        module = dict(model.named_modules())[layer]
        ref = LayerGradCam(model, module).attribute(x, target=3, relu_attributions=True)
        assert ref.shape[1] == 1
        signed = LayerGradCam(model, module).attribute(x, target=3, relu_attributions=False)
        assert (signed != 0).all()
        torch.testing.assert_close(linear.raw[layer], signed[:, 0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(raw.raw[layer], ref[:, 0], atol=1e-5, rtol=1e-5)
        up = LayerAttribution.interpolate(ref, tuple(x.shape[2:]), interpolate_mode="bilinear")
        torch.testing.assert_close(full.maps[layer], minmax_normalize(up)[:, 0], atol=1e-5, rtol=1e-5)


def test_top_k_matches_captum_per_class():
    model = SmallConvNet().eval()
    x = torch.rand(3, 1, 10, 10)
    top = camlens.GradCAM(model, layers="seq.6", upsample=False, normalize=False)(x, top_k=3)
    for j in range(3):
        ref = LayerGradCam(model, model.seq[6]).attribute(x, target=top.targets[:, j].tolist(), relu_attributions=True)
        torch.testing.assert_close(top.raw["seq.6"][:, j], ref[:, 0], atol=1e-5, rtol=1e-5)


def test_list_layers_reports_output_shapes():
    model = SmallConvNet().eval()
    rows = camlens.list_layers(model, torch.rand(2, 1, 10, 10))
    shapes = {name: shape for name, _, shape in rows}
    assert shapes["seq.0"] == (2, 6, 10, 10)
    assert shapes["seq.6"] == (2, 4, 10, 10)
    assert shapes["seq.8"] == (2, 400)
    types = {name: kind for name, kind, _ in rows}
    assert types["seq.9"] == "Linear" and shapes["seq.9"] == (2, 7)
    assert [r[0] for r in rows][:3] == ["seq.0", "seq.1", "seq.2"]  # call order
