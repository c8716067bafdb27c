"""Score-CAM's exact savings: the inference-optimized copy, shared masks, separable upsampling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import camlens
from camlens.core.ops import upsample
from camlens.errors import InputError
from camlens.methods import _rerun
from camlens.methods.scorecam import _mask_upsampler
from testmodels import SmallConvNet, bn_convnet, hook_count

LAYER = "seq.5"


@pytest.fixture(autouse=True)
def _build_for_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tiny calls have far fewer passes than it takes to pay for building a copy; build anyway."""
    monkeypatch.setattr(_rerun, "MIN_ROWS_TO_BUILD", 0)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_optimized_copy_gives_the_models_maps_and_leaves_the_model_as_found() -> None:
    model, x = bn_convnet(), torch.randn(3, 1, 8, 8)
    before, n_hooks = snapshot(model), hook_count(model)
    fast = camlens.ScoreCAM(model, LAYER)
    plain = camlens.ScoreCAM(model, LAYER, optimize=False)
    a, b = fast(x, target=[0, 3, 6]), plain(x, target=[0, 3, 6])
    assert fast.inference_copy.last_used == "optimized copy"
    assert plain.inference_copy.last_used == "model"
    torch.testing.assert_close(a.raw[LAYER], b.raw[LAYER], rtol=1e-4, atol=1e-6)
    assert not torch.equal(a.raw[LAYER], torch.zeros_like(a.raw[LAYER]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hook_count(model) == n_hooks
    assert all(isinstance(m, nn.BatchNorm2d) for m in (model.seq[1], model.seq[4]))  # not folded in place
    assert not any(m.training for m in model.modules())


def test_same_padding_is_made_explicit_in_the_copy_only() -> None:
    from camlens.demo.models import ConvNet

    model, x = ConvNet().eval(), torch.rand(2, 1, 28, 28)
    fast = camlens.ScoreCAM(model, "seq.5")
    got = fast(x, target=[1, 7]).raw["seq.5"]
    assert fast.inference_copy.last_used == "optimized copy"
    assert model.seq[0].padding == "same"  # the user's model keeps its string padding
    expected = camlens.ScoreCAM(model, "seq.5", optimize=False)(x, target=[1, 7]).raw["seq.5"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


class Branchy(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SmallConvNet(size=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out if bool(out.sum() > -1e9) else -out


class SqueezeExcite(nn.Module):
    """conv-BN-ReLU, then a squeeze-excitation gate (a broadcasting multiply oneDNN refuses at run time)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.seq = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 4, 1), nn.Sigmoid())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.seq(x)
        return self.head(t * self.gate(t))


def _training(m: SmallConvNet) -> nn.Module:
    m.seq[1].train()
    return m


def _hooked(m: SmallConvNet) -> nn.Module:
    m.seq[0].register_forward_hook(lambda mod, i, o: None)
    return m


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _training(bn_convnet()), "training mode"),
        (lambda: _hooked(bn_convnet()), "forward hooks"),
        (lambda: bn_convnet().double(), "float32"),
        (lambda: Branchy().eval(), "torch.fx could not prepare"),
        (lambda: SqueezeExcite().eval(), "the optimized copy fails on this input"),
    ],
    ids=["train-mode", "hooked", "float64", "untraceable", "fails-at-run-time"],
)
def test_where_the_copy_cannot_serve_the_model_runs_itself(make, reason: str) -> None:
    model = make()
    dtype = next(model.parameters()).dtype
    x = torch.randn(2, 1, 8, 8, dtype=dtype)
    layer = "net.seq.5" if isinstance(model, Branchy) else "seq.2" if isinstance(model, SqueezeExcite) else LAYER
    auto = camlens.ScoreCAM(model, layer)
    result = auto(x, target=1)
    assert auto.inference_copy.last_used == "model"
    reference = camlens.ScoreCAM(model, layer, optimize=False)(x, target=1)
    torch.testing.assert_close(result.raw[layer], reference.raw[layer], rtol=0, atol=0)
    with pytest.raises(InputError, match=reason):
        camlens.ScoreCAM(model, layer, optimize=True)(x, target=1)


def test_the_copy_follows_in_place_weight_changes() -> None:
    model, x = bn_convnet(), torch.randn(2, 1, 8, 8)
    fast = camlens.ScoreCAM(model, LAYER)
    first = fast(x, target=2).raw[LAYER]
    with torch.no_grad():
        model.seq[6].weight.mul_(-1.5)  # an optimizer step, say
    second = fast(x, target=2).raw[LAYER]
    assert fast.inference_copy.last_used == "optimized copy"
    expected = camlens.ScoreCAM(model, LAYER, optimize=False)(x, target=2).raw[LAYER]
    torch.testing.assert_close(second, expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(first, second, rtol=1e-2, atol=1e-3)


class Gained(SmallConvNet):
    """A Python float the trace bakes in as a constant: the fingerprint cannot see it change."""

    gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x) * self.gain


def test_a_copy_gone_stale_where_the_fingerprint_cannot_see_is_rebuilt() -> None:
    model, x = Gained(size=8).eval(), torch.randn(2, 1, 8, 8)
    fast = camlens.ScoreCAM(model, LAYER)
    fast(x, target=0)
    assert fast.inference_copy.last_used == "optimized copy"
    model.gain = 3.0  # a Python attribute
    got = fast(x, target=0).raw[LAYER]
    assert fast.inference_copy.last_used == "optimized copy"
    torch.testing.assert_close(got, camlens.ScoreCAM(model, LAYER, optimize=False)(x, target=0).raw[LAYER])
    with torch.no_grad():
        model.seq[6].weight.data.mul_(-1.5)  # .data: no version bump, same storage
    got = fast(x, target=0).raw[LAYER]
    assert fast.inference_copy.last_used == "optimized copy"
    expected = camlens.ScoreCAM(model, LAYER, optimize=False)(x, target=0).raw[LAYER]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


class Counting(SmallConvNet):
    """Adds how often it has been called to its logits: no traced copy can reproduce that."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.seq(x) + float(self.calls)


def test_a_copy_that_does_not_reproduce_the_model_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = Counting(size=8).eval(), torch.randn(2, 1, 8, 8)
    fast = camlens.ScoreCAM(model, LAYER)
    got = fast(x, target=0).raw[LAYER]
    assert fast.inference_copy.last_used == "model" and fast.inference_copy._copy is None
    # softmax ignores the shift, so the maps are those of the model itself
    torch.testing.assert_close(got, camlens.ScoreCAM(model, LAYER, optimize=False)(x, target=0).raw[LAYER])
    import torch.fx.experimental.optimization as fxo

    real, builds = fxo.optimize_for_inference, []
    monkeypatch.setattr(fxo, "optimize_for_inference", lambda m, *a, **k: builds.append(m) or real(m, *a, **k))
    fast(x, target=0)
    assert fast.inference_copy.last_used == "model" and builds == []  # the failure is remembered: no rebuild
    monkeypatch.undo()
    monkeypatch.setattr(_rerun, "MIN_ROWS_TO_BUILD", 0)
    with pytest.raises(InputError, match="does not reproduce the model's output"):
        camlens.ScoreCAM(model, LAYER, optimize=True)(x, target=0)


def test_a_copy_is_first_built_only_for_a_call_with_many_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_rerun, "MIN_ROWS_TO_BUILD", 20)
    model = bn_convnet()
    fast = camlens.ScoreCAM(model, LAYER)  # seq.5 has 5 channels: 5 passes an image at most
    fast(torch.randn(2, 1, 8, 8), target=1)
    # 10 passes: not worth building
    assert fast.inference_copy.last_used == "model" and fast.inference_copy._copy is None
    fast(torch.randn(6, 1, 8, 8), target=1)
    assert fast.inference_copy.last_used == "optimized copy"  # 30 passes: built
    fast(torch.randn(1, 1, 8, 8), target=1)
    assert fast.inference_copy.last_used == "optimized copy"  # built already: used for small calls too
    strict = camlens.ScoreCAM(model, LAYER, optimize=True)
    strict(torch.randn(1, 1, 8, 8), target=1)
    assert strict.inference_copy.last_used == "optimized copy"  # optimize=True builds for any call


def test_a_batch_of_constant_channels_needs_one_pass() -> None:
    model = bn_convnet()
    with torch.no_grad():
        model.seq[3].weight.zero_()  # seq.5 = ReLU(BN(bias)): every channel constant
    x = torch.randn(2, 1, 8, 8)
    rows: list[int] = []
    model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    with pytest.warns(UserWarning, match=f"layer '{LAYER}' holds one value at every position of its \\(8, 8\\) maps"):
        result = camlens.ScoreCAM(model, LAYER, optimize=False, batch_size=64, skip_constant=False)(x, target=[0, 1])
    assert rows == [2, 1]  # the call's own pass, then the all-zero input once
    with torch.no_grad():
        zero = model(torch.zeros(1, 1, 8, 8)).softmax(1)[0]
        a = model.seq[:6](x)
    expected = torch.relu(zero[[0, 1]][:, None, None] * a.sum(1))  # every channel weighted by the zero input's score
    torch.testing.assert_close(result.raw[LAYER], expected)
    # The default skips constant channels, as the authors' code does: no extra pass, every weight 0.
    rows.clear()
    with pytest.warns(UserWarning, match="every map there is flat"):
        skipped = camlens.ScoreCAM(model, LAYER, optimize=False, batch_size=64)(x, target=[0, 1])
    assert rows == [2]
    assert float(skipped.raw[LAYER].abs().max()) == 0.0


def test_optimize_must_be_none_or_a_bool() -> None:
    with pytest.raises(InputError, match="optimize='yes'"):
        camlens.ScoreCAM(bn_convnet(), LAYER, optimize="yes")  # type: ignore[arg-type]


def test_channels_with_equal_normalized_maps_share_one_forward_pass() -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():  # channel 1 = 2 x channel 0, so relu(channel 1) = 2 relu(channel 0)
        conv.weight[1] = 2 * conv.weight[0]
        conv.bias[1] = 2 * conv.bias[0]
    model = nn.Sequential(conv, nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).double().eval()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    rows = []
    model.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    sc = camlens.ScoreCAM(model, "2", optimize=False, batch_size=64)  # (no pass to measure a row's bytes)
    result = sc(x, target=[1, 4])
    with torch.no_grad():
        flat = model[:3](x).flatten(2)
    live = flat.amax(-1) > flat.amin(-1)  # (N, C): non-constant channels
    assert bool(live[:, 0].all()), "the test needs channel 0 (and so channel 1) live in both images"
    distinct = int(live.sum()) - x.shape[0]  # channel 1 repeats channel 0 in each image
    # the call's own pass, one all-zero pass if a channel is constant, then one pass per distinct mask
    assert sum(rows) == x.shape[0] + int(not live.all()) + distinct
    # an independent loop, one channel at a time, as the paper writes it
    with torch.no_grad():
        a = model[:3](x)
        for n, c in enumerate([1, 4]):
            w = []
            for k in range(4):
                up = F.interpolate(a[n, k][None, None], size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
                mask = (up - up.min()) / (up.max() - up.min())
                w.append(model(x[n : n + 1] * mask).softmax(1)[0, c])
            expected = torch.relu(sum(wk * a[n, k] for k, wk in enumerate(w)))
            torch.testing.assert_close(result.raw["2"][n], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("spatial", "size"), [((2, 2), (64, 64)), ((3, 5), (17, 11)), ((7, 7), (7, 7)), ((2, 3, 2), (4, 6, 4))]
)
def test_the_separable_upsampler_equals_interpolate(spatial, size) -> None:
    k = torch.rand(5, *spatial, dtype=torch.float64)
    up = _mask_upsampler(spatial, size, torch.float64, k.device)
    torch.testing.assert_close(up(k), upsample(k.unsqueeze(1), size)[:, 0], rtol=1e-12, atol=1e-12)
