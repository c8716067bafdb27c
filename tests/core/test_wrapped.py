"""DataParallel, DistributedDataParallel (1-process gloo) and torch.compile: hooks reach the real model."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

import camlens
from camlens.core.wrapped import compiled_submodules, strip_wrapper_prefix, unwrap_model
from camlens.demo.models import ConvNet


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def net_and_x():
    torch.manual_seed(0)
    return ConvNet().eval(), torch.rand(3, 1, 28, 28)


def test_data_parallel_on_cpu_matches_the_plain_model(net_and_x):
    net, x = net_and_x
    ref = camlens.GradCAM(net, "seq.4")(x)
    dp = nn.DataParallel(net)
    assert unwrap_model(dp) is net
    for layer in ("seq.4", "module.seq.4", net.seq[4]):
        r = camlens.GradCAM(dp, layer)(x)
        assert list(r.maps) == ["seq.4"]
        torch.testing.assert_close(r.map, ref.map, atol=0, rtol=0)
    assert _hook_count(dp) == 0


def test_distributed_data_parallel_one_process_gloo(net_and_x, tmp_path):
    net, x = net_and_x
    ref = camlens.GradCAM(net, "seq.4")(x)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(net)
        r = camlens.GradCAM(ddp, "module.seq.4")(x)
        torch.testing.assert_close(r.map, ref.map, atol=0, rtol=0)
        auto = camlens.GradCAM(ddp)(x)  # automatic choice through the wrapper
        assert list(auto.maps) == ["seq.5"]
        assert all(p.grad is None for p in ddp.parameters())
        # the wrapper still trains afterwards: a normal step runs and syncs
        ddp.train()
        ddp(x).sum().backward()
        assert all(p.grad is not None for p in ddp.parameters())
    finally:
        dist.destroy_process_group()
        for p in net.parameters():
            p.grad = None
        net.eval()


def test_compiled_graph_skips_hooks_so_camlens_explains_the_original(net_and_x):
    net, x = net_and_x
    compiled = torch.compile(net, backend="eager")  # dynamo traces as with inductor, without a C++ build
    compiled(x)
    fired = []
    handle = net.seq[4].register_forward_hook(lambda *a: fired.append(1))
    try:
        compiled(x)
    finally:
        handle.remove()
    assert fired == []  # the failure users hit with hooks (peers: Captum, torchcam)
    ref = camlens.GradCAM(net, "seq.4")(x)
    for layer in ("seq.4", "_orig_mod.seq.4"):
        r = camlens.GradCAM(compiled, layer)(x)
        torch.testing.assert_close(r.map, ref.map, atol=0, rtol=0)
    assert strip_wrapper_prefix("_orig_mod.seq.4", compiled) == "seq.4"
    assert _hook_count(net) == 0


def test_compiled_data_parallel_nesting_unwraps_all_the_way(net_and_x):
    net, x = net_and_x
    wrapped = torch.compile(nn.DataParallel(net), backend="eager")
    assert unwrap_model(wrapped) is net
    assert strip_wrapper_prefix("_orig_mod.module.seq.2", wrapped) == "seq.2"
    r = camlens.GradCAM(wrapped, "_orig_mod.module.seq.2")(x)
    torch.testing.assert_close(r.map, camlens.GradCAM(net, "seq.2")(x).map, atol=0, rtol=0)


def test_a_layer_inside_a_compiled_submodule_gets_a_clear_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    outer = nn.Sequential()
    outer.add_module("backbone", torch.compile(model[:2], backend="eager"))
    outer.add_module("head", model[2:])
    assert compiled_submodules(outer) == ["backbone"]
    with pytest.raises(camlens.LayerNotUsedError, match=r"inside 'backbone'.*torch.compile.*_orig_mod"):
        camlens.GradCAM(outer, "backbone._orig_mod.0")


@pytest.mark.parametrize("method", ["fullgrad", "guided-backprop", "guided-gradcam"])
def test_input_gradient_methods_unwrap_data_parallel_too(net_and_x, method):
    model, x = net_and_x
    kwargs = {"layers": "seq.4"} if method == "guided-gradcam" else {}
    plain = camlens.get_method(method)(model, **kwargs)(x)
    cam = camlens.get_method(method)(nn.DataParallel(model), **kwargs)
    assert cam.model is model
    wrapped = cam(x)
    for key, m in plain.maps.items():
        torch.testing.assert_close(wrapped.maps[key], m)


@pytest.mark.parametrize("wrap", ["data-parallel", "compile"])
def test_smoothing_wrapper_unwraps_like_every_method(net_and_x, wrap):
    model, x = net_and_x
    wrapped = nn.DataParallel(model) if wrap == "data-parallel" else torch.compile(model, backend="eager")
    plain = camlens.NoiseSmooth(model, "seq.4", n_samples=3, seed=1)(x, top_k=2)
    smooth = camlens.NoiseSmooth(wrapped, "seq.4", n_samples=3, seed=1)
    assert smooth.model is model and smooth.inner.model is model
    assert smooth.wrapped is wrapped
    result = smooth(x, top_k=2)
    torch.testing.assert_close(result.map, plain.map, atol=0, rtol=0)
    torch.testing.assert_close(result.scores, plain.scores, atol=0, rtol=0)
    assert _hook_count(model) == 0
