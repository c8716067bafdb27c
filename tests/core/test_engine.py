"""Grad-CAM engine: values worked by hand, identities, batching, top-k, model hygiene."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import camlens
from camlens.core.ops import minmax_normalize
from testmodels import GapNet, SmallConvNet, hook_count


class OneConv(nn.Module):
    """1x1 conv with weights (1, -1) -> two channels x and -x; flatten; linear with given weights."""

    def __init__(self, head: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.fc = nn.Linear(8, head.shape[0], bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_one_conv_maps_by_hand():
    # Class 0: channel 0 weights (1,0,0,1) -> alpha0 = 0.5; channel 1 weights (0,0,0,-2) -> alpha1 = -0.5.
    # map = 0.5 * x + (-0.5) * (-x) = x.  Class 1: alpha = (-0.25, 0.25) -> map = -0.5 x -> ReLU -> 0.
    head = torch.tensor([[1.0, 0, 0, 1, 0, 0, 0, -2], [-1.0, 0, 0, 0, 0, 0, 0, 1]])
    model = OneConv(head)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    cam = camlens.GradCAM(model, layers="conv")
    r0 = cam(x, target=0)
    assert torch.allclose(r0.raw["conv"], torch.tensor([[[1.0, 2.0], [3.0, 4.0]]]))
    assert torch.allclose(r0.maps["conv"], torch.tensor([[[0.0, 1 / 3], [2 / 3, 1.0]]]))
    r1 = cam(x, target=1)
    assert torch.equal(r1.raw["conv"], torch.zeros(1, 2, 2))
    assert torch.equal(r1.maps["conv"], torch.zeros(1, 2, 2))  # all-zero map stays zero, no NaN
    # without ReLU the negative map is reachable: -0.5 x
    r1_raw = camlens.GradCAM(model, layers="conv", relu=False, normalize=False)(x, target=1)
    assert torch.allclose(r1_raw.raw["conv"], -0.5 * x[:, 0])
    # scores are pre-softmax: y0 = x00 + x11 + 2*x11 = 1 + 4 + 8
    assert r0.scores.item() == pytest.approx(13.0)
    assert r0.targets.tolist() == [0]


def test_predicted_class_is_the_default_target():
    model = SmallConvNet().eval()
    x = torch.rand(4, 1, 10, 10)
    r = camlens.GradCAM(model, layers="seq.6")(x)
    assert torch.equal(r.targets, model(x).argmax(1))
    assert torch.allclose(r.logits, model(x))


def test_gradcam_equals_cam_on_gap_head():
    model = GapNet().eval()
    x = torch.rand(3, 3, 7, 7)
    r = camlens.GradCAM(model, layers="features.3", relu=False, upsample=False, normalize=False)(x)
    acts = model.features(x)
    w = model.fc.weight[r.targets]  # (N, C)
    cam = torch.einsum("nc,nchw->nhw", w, acts)
    # alpha_k = w_k / (h w), so Grad-CAM = CAM / (h w)
    assert torch.allclose(r.raw["features.3"] * 49, cam, atol=1e-5)
    normed = camlens.GradCAM(model, layers="features.3", upsample=False)(x).maps["features.3"]
    assert torch.allclose(normed, minmax_normalize(torch.relu(cam)[:, None])[:, 0], atol=1e-5)


def test_alone_equals_inside_a_batch():
    model = SmallConvNet(bn=True).eval()
    x = torch.rand(5, 1, 10, 10)
    cam = camlens.GradCAM(model, layers=["seq.6", "seq.3"])
    batch = cam(x, target=[0, 1, 2, 3, 4])
    for i in range(5):
        one = cam(x[i : i + 1], target=i)
        for name in ("seq.6", "seq.3"):
            assert torch.allclose(one.maps[name][0], batch.maps[name][i], atol=1e-6)


def test_top_k_equals_k_single_class_calls():
    model = SmallConvNet().eval()
    x = torch.rand(3, 1, 10, 10)
    cam = camlens.GradCAM(model, layers=["seq.6", "seq.0"])
    top = cam(x, top_k=4)
    assert top.maps["seq.6"].shape == (3, 4, 10, 10)
    assert torch.equal(top.targets, model(x).topk(4, dim=1).indices)
    for j in range(4):
        single = cam(x, target=top.targets[:, j])
        for name in ("seq.6", "seq.0"):
            assert torch.allclose(top.maps[name][:, j], single.maps[name], atol=1e-6)
            assert torch.allclose(top.raw[name][:, j], single.raw[name], atol=1e-6)


def test_explicit_classes_per_image_and_callable_targets():
    model = SmallConvNet().eval()
    x = torch.rand(2, 1, 10, 10)
    cam = camlens.GradCAM(model, layers="seq.6", normalize=False)
    pairs = cam(x, target=torch.tensor([[1, 2], [3, 4]]))
    assert pairs.maps["seq.6"].shape == (2, 2, 10, 10)
    # a logit difference y1 - y2 is linear: its Grad-CAM before ReLU is the difference of the two
    lin = camlens.GradCAM(model, layers="seq.6", relu=False, normalize=False)
    diff = lin(x, target=lambda logits: logits[:, 1] - logits[:, 2])
    assert diff.targets is None
    a, b = lin(x, target=1), lin(x, target=2)
    assert torch.allclose(diff.raw["seq.6"], a.raw["seq.6"] - b.raw["seq.6"], atol=1e-5)
    two = lin(x, target=lambda logits: logits[:, :2])
    assert two.raw["seq.6"].shape == (2, 2, 10, 10)


def test_inplace_relu_after_the_layer_does_not_change_the_map():
    x = torch.rand(3, 1, 10, 10)
    plain = SmallConvNet(inplace=False).eval()
    inplace = SmallConvNet(inplace=True).eval()
    inplace.load_state_dict(plain.state_dict())
    for layer in ("seq.0", "seq.3", "seq.6"):
        a = camlens.GradCAM(plain, layers=layer, relu=False, normalize=False)(x, target=2)
        b = camlens.GradCAM(inplace, layers=layer, relu=False, normalize=False)(x, target=2)
        assert torch.allclose(a.raw[layer], b.raw[layer], atol=1e-6)
        # the conv output has negative values, so a view overwritten by ReLU would differ
        assert (plain.seq[: int(layer.split(".")[1]) + 1](x) < 0).any()


def test_works_under_no_grad_frozen_params_and_plain_inputs():
    model = SmallConvNet().eval()
    x = torch.rand(2, 1, 10, 10)
    ref = camlens.GradCAM(model, layers="seq.3")(x).maps["seq.3"]
    frozen = copy.deepcopy(model).requires_grad_(False)
    with torch.no_grad():
        got = camlens.GradCAM(frozen, layers="seq.3")(x).maps["seq.3"]
        assert not torch.is_grad_enabled()
    assert torch.allclose(ref, got, atol=1e-6)
    assert all(not p.requires_grad for p in frozen.parameters())
    xg = x.clone().requires_grad_(True)
    got2 = camlens.GradCAM(model, layers="seq.3")(xg).maps["seq.3"]
    assert torch.allclose(ref, got2, atol=1e-6)
    assert xg.grad is None


def test_inference_mode_context_is_fine_but_inference_tensors_are_refused():
    model = SmallConvNet().eval()
    x = torch.rand(2, 1, 10, 10)
    with torch.inference_mode():
        r = camlens.GradCAM(model, layers="seq.6")(x)
        x_inf = torch.rand(2, 1, 10, 10)
    assert r.maps["seq.6"].shape == (2, 10, 10)
    with pytest.raises(camlens.InputError, match=r"inference tensor.*clone"):
        camlens.GradCAM(model, layers="seq.6")(x_inf)


def test_train_mode_is_left_as_found():
    model = SmallConvNet(bn=True).train()
    x = torch.rand(4, 1, 10, 10)
    camlens.GradCAM(model, layers="seq.3")(x)
    assert all(m.training for m in model.modules())
    model.eval()
    camlens.GradCAM(model, layers="seq.3")(x)
    assert not any(m.training for m in model.modules())


def test_multi_layer_fusion():
    model = SmallConvNet().eval()
    x = torch.rand(2, 1, 10, 10)
    r = camlens.GradCAM(model, layers=["seq.0", "seq.3", "seq.6"], fuse="mean")(x)
    expect = torch.stack([r.maps[n] for n in ("seq.0", "seq.3", "seq.6")]).mean(0)
    assert torch.allclose(r.fused, expect)
    assert torch.equal(r.map, r.fused)


def test_upsampling_is_bilinear_to_the_input_size():
    model = GapNet().eval()
    model.features[2].stride = (2, 2)  # layer output 4x4 for an 8x8 input
    x = torch.rand(2, 3, 8, 8)
    r = camlens.GradCAM(model, layers="features.2", normalize=False)(x)
    raw = r.raw["features.2"]
    assert raw.shape == (2, 4, 4)
    expect = torch.nn.functional.interpolate(raw[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(r.maps["features.2"], expect)


def test_nothing_below_the_earliest_layer_is_backpropagated():
    calls = []

    class Spy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return g

    class Net(SmallConvNet):
        def forward(self, x):
            x = self.seq[0](x)
            x = Spy.apply(x)
            return self.seq[1:](x)

    model = Net().eval()
    x = torch.rand(2, 1, 10, 10, requires_grad=True)
    camlens.GradCAM(model, layers="seq.3")(x)
    camlens.GradCAM(model, layers="seq.6")(x, top_k=3)
    assert calls == []
    camlens.GradCAM(model, layers="seq.0")(x)  # the spy lies above seq.0 now
    assert calls == [1]


def test_thousand_calls_leave_no_hooks_no_grads_even_when_raising():
    model = SmallConvNet(inplace=True).eval()
    before = hook_count(model)
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cam = camlens.GradCAM(model, layers=["seq.3", "seq.6"])
    x = torch.rand(2, 1, 10, 10)
    raised = 0
    for i in range(1000):
        try:
            if i % 4 == 0:
                cam(x, target=99)  # out of range: raises inside the hooked call
            elif i % 4 == 1:
                cam(torch.rand(2, 1, 9, 9))  # wrong size: the model itself raises
            else:
                cam(x, top_k=2 if i % 2 else None)
        except (camlens.TargetError, RuntimeError):
            raised += 1
    assert raised == 500
    assert hook_count(model) == before == 0
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert torch.is_grad_enabled()
