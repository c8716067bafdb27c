"""Each method against an independent reference: plain loops over channels and positions from the paper's formula.

References get activations and gradients by running the ``nn.Sequential``
halves of a tiny model directly (no hooks, no camlens), in float64.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _perturb_refs import ablation_drops
from torch import nn

import camlens
from camlens.methods.ablationcam import AblationCAM

DT = torch.float64


def spatial_model(seed: int = 0) -> nn.Sequential:
    """conv-relu-conv-relu-flatten-linear: the gradient varies over positions."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).to(DT).eval()  # fmt: skip


def gap_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5),
    ).to(DT).eval()  # fmt: skip


def inputs(n: int = 2, size: int = 6, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 2, size, size, dtype=DT, generator=torch.Generator().manual_seed(seed))


def acts_grads(model: nn.Sequential, x: torch.Tensor, cut: int, classes: list[int]):
    """Activations after module ``cut`` and the gradient of each image's class score, as nested lists."""
    a = model[: cut + 1](x).detach().requires_grad_(True)
    out = model[cut + 1 :](a)
    s = sum(out[i, c] for i, c in enumerate(classes))
    (g,) = torch.autograd.grad(s, a)
    return a.detach(), g


def relu(v: float) -> float:
    return v if v > 0 else 0.0


def loop_map(weight_fn, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k A^k) for one image, ``weight_fn(k) -> float``, as a slow loop."""
    c, h, w = a.shape
    out = torch.zeros(h, w, dtype=DT)
    ws = [weight_fn(k) for k in range(c)]
    for i in range(h):
        for j in range(w):
            out[i, j] = relu(sum(ws[k] * float(a[k, i, j]) for k in range(c)))
    return out


def positions(a: torch.Tensor):
    return [(i, j) for i in range(a.shape[1]) for j in range(a.shape[2])]


CLASSES = [1, 3]


def check(method: camlens.BaseCAM, model, x, cut, ref_one) -> None:
    a, g = acts_grads(model, x, cut, CLASSES)
    result = method(x, target=CLASSES)
    for n in range(x.shape[0]):
        torch.testing.assert_close(result.raw[str(cut)][n], ref_one(a[n], g[n]), rtol=1e-7, atol=1e-10)


# ---- gradient methods ---------------------------------------------------------------


def test_gradcam_matches_loop() -> None:
    model, x = spatial_model(), inputs()

    def ref(a, g):
        hw = a.shape[1] * a.shape[2]
        return loop_map(lambda k: sum(float(g[k, i, j]) for i, j in positions(a)) / hw, a, g)

    check(camlens.GradCAM(model, "3"), model, x, 3, ref)


def test_counterfactual_is_gradcam_with_negated_weights() -> None:
    model, x = spatial_model(), inputs()

    def ref(a, g):
        hw = a.shape[1] * a.shape[2]
        return loop_map(lambda k: -sum(float(g[k, i, j]) for i, j in positions(a)) / hw, a, g)

    check(camlens.CounterfactualCAM(model, "3"), model, x, 3, ref)
    # and it is exactly the relu of minus the un-rectified Grad-CAM map
    plain = camlens.GradCAM(model, "3", relu=False)(x, target=CLASSES).raw["3"]
    counter = camlens.CounterfactualCAM(model, "3")(x, target=CLASSES).raw["3"]
    torch.testing.assert_close(counter, torch.relu(-plain))


def gradcampp_ref(normalize_alpha: bool):
    def ref(a, g):
        c = a.shape[0]
        weights = []
        for k in range(c):
            a_sum = sum(float(a[k, i, j]) for i, j in positions(a))
            alphas = {}
            for i, j in positions(a):
                gk = float(g[k, i, j])
                denom = 2 * gk**2 + a_sum * gk**3
                alphas[i, j] = 0.0 if gk == 0 else gk**2 / (denom if denom != 0 else 1.0)
            if normalize_alpha:
                tot = sum(alphas.values())
                alphas = {p: v / (tot if tot != 0 else 1.0) for p, v in alphas.items()}
            weights.append(sum(alphas[i, j] * relu(float(g[k, i, j])) for i, j in positions(a)))
        return loop_map(lambda k: weights[k], a, g)

    return ref


@pytest.mark.parametrize("normalize_alpha", [False, True])
def test_gradcampp_matches_loop(normalize_alpha: bool) -> None:
    model, x = spatial_model(), inputs()
    check(
        camlens.GradCAMPlusPlus(model, "3", normalize_alpha=normalize_alpha),
        model,
        x,
        3,
        gradcampp_ref(normalize_alpha),
    )


def test_gradcampp_exp_closed_form_matches_autograd_derivatives() -> None:
    """The closed form's higher derivatives equal autograd's for Y = exp(S) on a piecewise-linear head."""
    model, x = spatial_model(), inputs(1)
    a = model[:4](x).detach().requires_grad_(True)
    s = model[4:](a)[0, 1]
    (g1,) = torch.autograd.grad(torch.exp(s), a, create_graph=True)
    # d^2 Y / dA_kij^2 = exp(S) g^2 (the linear head has zero curvature almost everywhere)
    (g2,) = torch.autograd.grad(g1[0, 2, 1, 1], a)
    gs = g1.detach() / torch.exp(s.detach())
    torch.testing.assert_close(g2[0, 2, 1, 1], torch.exp(s.detach()) * gs[0, 2, 1, 1] ** 2)


def test_xgradcam_matches_loop() -> None:
    model, x = spatial_model(), inputs()

    def ref(a, g):
        def w(k):
            tot = sum(float(a[k, i, j]) for i, j in positions(a))
            return 0.0 if tot == 0 else sum(float(a[k, i, j]) / tot * float(g[k, i, j]) for i, j in positions(a))

        return loop_map(w, a, g)

    check(camlens.XGradCAM(model, "3"), model, x, 3, ref)


def elementwise_ref(inner_relu: bool, grad_relu: bool):
    def ref(a, g):
        c, h, w = a.shape
        out = torch.zeros(h, w, dtype=DT)
        for i in range(h):
            for j in range(w):
                terms = []
                for k in range(c):
                    gk = relu(float(g[k, i, j])) if grad_relu else float(g[k, i, j])
                    t = gk * float(a[k, i, j])
                    terms.append(relu(t) if inner_relu else t)
                out[i, j] = relu(sum(terms))
        return out

    return ref


def test_hirescam_matches_loop() -> None:
    model, x = spatial_model(), inputs()
    check(camlens.HiResCAM(model, "3"), model, x, 3, elementwise_ref(inner_relu=False, grad_relu=False))


def test_gradcam_elementwise_matches_loop() -> None:
    model, x = spatial_model(), inputs()
    check(camlens.GradCAMElementWise(model, "3"), model, x, 3, elementwise_ref(inner_relu=True, grad_relu=False))


def test_layercam_matches_loop() -> None:
    model, x = spatial_model(), inputs()
    check(camlens.LayerCAM(model, "3"), model, x, 3, elementwise_ref(inner_relu=False, grad_relu=True))


def test_layercam_fusion_is_max_of_tanh_scaled_maps() -> None:
    model, x = spatial_model(), inputs()
    result = camlens.LayerCAM(model, ["1", "3"], normalize=False)(x, target=CLASSES)
    scaled = []
    for cut in (1, 3):
        a, g = acts_grads(model, x, cut, CLASSES)
        per = []
        for n in range(x.shape[0]):
            m = elementwise_ref(False, True)(a[n], g[n])
            m = F.interpolate(m[None, None], size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
            top = float(m.max())
            per.append(torch.tensor([[math.tanh(2.0 * float(v) / top) for v in row] for row in m], dtype=DT))
        scaled.append(torch.stack(per))
    expected = torch.maximum(scaled[0], scaled[1])
    torch.testing.assert_close(result.fused, expected)


def test_cam_matches_loop_and_needs_a_gap_head() -> None:
    model, x = gap_model(), inputs()
    w = model[6].weight.detach()

    a, _ = acts_grads(model, x, 3, CLASSES)
    result = camlens.CAM(model, "3")(x, target=CLASSES)
    for n, c in enumerate(CLASSES):
        expected = loop_map([float(w[c, k]) for k in range(4)].__getitem__, a[n], None)
        torch.testing.assert_close(result.raw["3"][n], expected, rtol=1e-7, atol=1e-10)
    with pytest.raises(camlens.LayerNotFoundError, match="in_features=4"):
        camlens.CAM(spatial_model(), "3")(x)


def test_gap_head_identity_gradcam_hirescam_xgradcam_cam() -> None:
    model, x = gap_model(), inputs(3)
    maps = [
        cls(model, "3")(x, target=[0, 2, 4]).maps["3"]
        for cls in (camlens.CAM, camlens.GradCAM, camlens.HiResCAM, camlens.XGradCAM)
    ]
    assert float(maps[0].amax()) > 0
    for m in maps[1:]:
        torch.testing.assert_close(m, maps[0])
    # up to scale before normalization: Grad-CAM = CAM / (h w)
    cam = camlens.CAM(model, "3", normalize=False, upsample=False)(x, target=[0, 2, 4]).map
    grad = camlens.GradCAM(model, "3", normalize=False, upsample=False)(x, target=[0, 2, 4]).map
    torch.testing.assert_close(grad, cam / 36)


# ---- Eigen-CAM -----------------------------------------------------------------------


def eigen_ref(mat: np.ndarray, center: bool) -> np.ndarray:
    """First-component projection of a (positions, C) matrix with the documented sign rule."""
    total = mat.sum(axis=1)
    m = mat - mat.mean(axis=0, keepdims=True) if center else mat
    _, _, vt = np.linalg.svd(m, full_matrices=False)
    proj = np.array([sum(m[p, k] * vt[0, k] for k in range(m.shape[1])) for p in range(m.shape[0])])
    agree, size = float((proj * total).sum()), float(np.linalg.norm(np.abs(mat).sum(axis=1)))
    if abs(agree) <= 1e-4 * float(np.linalg.norm(proj)) * size:  # no channel sum to follow: the projection's own
        return -proj if float(proj.sum()) < 0 else proj
    return -proj if agree < 0 else proj


@pytest.mark.parametrize("center", [False, True])
def test_eigencam_matches_svd_loop(center: bool) -> None:
    model, x = spatial_model(), inputs()
    a, _ = acts_grads(model, x, 3, CLASSES)
    result = camlens.EigenCAM(model, "3", center=center, relu=False)(x, target=CLASSES)
    for n in range(x.shape[0]):
        mat = a[n].flatten(1).T.numpy()
        expected = torch.from_numpy(eigen_ref(mat, center)).view(6, 6)
        torch.testing.assert_close(result.raw["3"][n], expected, rtol=1e-7, atol=1e-10)


def test_eigengradcam_matches_svd_loop() -> None:
    model, x = spatial_model(), inputs()
    a, g = acts_grads(model, x, 3, CLASSES)
    result = camlens.EigenGradCAM(model, "3", relu=False)(x, target=CLASSES)
    for n in range(x.shape[0]):
        mat = (a[n] * g[n]).flatten(1).T.numpy()
        expected = torch.from_numpy(eigen_ref(mat, False)).view(6, 6)
        torch.testing.assert_close(result.raw["3"][n], expected, rtol=1e-7, atol=1e-10)


def test_eigencam_sign_where_the_channel_sum_cancels() -> None:
    """Features with a zero channel sum at every position (a LayerNorm's output with its initial affine,
    Swin's automatic layer in torchvision and timm): the sign used to follow the rounding of that sum, so
    f and -f (and a channels-last copy) gave opposite maps, often all zero after the ReLU."""
    from camlens.methods.eigencam import first_component

    f = torch.randn(3, 16, 5, 7, generator=torch.Generator().manual_seed(0))
    f = torch.nn.functional.layer_norm(f.permute(0, 2, 3, 1), (16,)).permute(0, 3, 1, 2)  # channel sums ~1e-7
    ours, negated = first_component(f, 2), first_component(-f, 2)
    torch.testing.assert_close(ours, negated, rtol=0, atol=1e-5)
    for n in range(3):
        mat = f[n].flatten(1).T.double().numpy()
        _, _, vt = np.linalg.svd(mat, full_matrices=False)
        proj = torch.from_numpy(mat @ vt[0]).view(5, 7).float()
        torch.testing.assert_close(ours[n], proj if float(proj.sum()) >= 0 else -proj, rtol=1e-4, atol=1e-4)
        assert float(ours[n].sum()) > 0


# ---- perturbation methods ---------------------------------------------------------------


def minmax_loop(m: torch.Tensor) -> torch.Tensor:
    lo, hi = float(m.min()), float(m.max())
    return torch.zeros_like(m) if hi == lo else (m - lo) / (hi - lo)


@pytest.mark.parametrize("weighting", ["probability", "channel-softmax"])
def test_scorecam_matches_loop(weighting: str) -> None:
    model = spatial_model()
    x = inputs(size=6)
    # pool to 3x3 first so the masks are upsampled
    model = nn.Sequential(*list(model[:4]), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).to(DT).eval()
    cut = 4
    result = camlens.ScoreCAM(model, str(cut), weighting=weighting, batch_size=3)(x, target=CLASSES)
    a, _ = acts_grads(model, x, cut, CLASSES)
    for n in range(x.shape[0]):
        c = CLASSES[n]
        scores = []
        for k in range(a.shape[1]):
            up = F.interpolate(a[n, k][None, None], size=(6, 6), mode="bilinear", align_corners=False)[0, 0]
            with torch.no_grad():
                logits = model(x[n : n + 1] * minmax_loop(up))[0]
            if weighting == "probability":
                scores.append(math.exp(float(logits[c])) / sum(math.exp(float(v)) for v in logits))
            else:
                scores.append(float(logits[c]))
        if weighting == "channel-softmax":
            z = sum(math.exp(s) for s in scores)
            scores = [math.exp(s) / z for s in scores]
        expected = loop_map(list(scores).__getitem__, a[n], None)
        torch.testing.assert_close(result.raw[str(cut)][n], expected, rtol=1e-7, atol=1e-10)


def test_scorecam_dead_channels_share_the_zero_input_score() -> None:
    model, x = spatial_model(), inputs()
    # kill channel 0 of layer 3 (constant zero after the ReLU)
    with torch.no_grad():
        model[2].weight[0] = 0
        model[2].bias[0] = -1.0
    full = camlens.ScoreCAM(model, "3", batch_size=2, skip_constant=False)
    s = full.channel_scores(_ctx(full, x), _acts(model, x, 3))
    with torch.no_grad():
        zero = model(torch.zeros(1, 2, 6, 6, dtype=DT)).softmax(1)[0]
    torch.testing.assert_close(s[:, 0, 0], zero[CLASSES])


def _acts(model, x, cut):
    return model[: cut + 1](x).detach()


def _ctx(method, x):
    from camlens.methods.base import CAMContext

    with torch.no_grad():
        logits = method.model(x)
    classes = torch.tensor(CLASSES)[:, None]
    return CAMContext(
        model=method.model, x=x, logits=logits, scores=logits.gather(1, classes), classes=classes,
        activations={}, gradients=None, target=None,
    )  # fmt: skip


class Wrapped(nn.Module):
    """Not an nn.Sequential: Ablation-CAM must use the hook re-run."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.seq = seq

    def forward(self, x):
        return self.seq(x)


def ablation_ref(model: nn.Sequential, x, cut: int, classes: list[int]):
    a = _acts(model, x, cut)
    out = []
    for n in range(x.shape[0]):
        ws = ablation_drops(model, a[n : n + 1], cut, classes[n])
        out.append(loop_map(ws.__getitem__, a[n], None))
    return torch.stack(out)


@pytest.mark.parametrize("rerun", ["auto", "sequential", "hook", "full"])
def test_ablationcam_matches_loop_in_every_rerun_mode(rerun: str) -> None:
    model, x = spatial_model(), inputs(3)
    method = AblationCAM(model, "3", rerun=rerun, batch_size=5)
    result = method(x, target=[*CLASSES, 0])
    expected = ablation_ref(model, x, 3, [*CLASSES, 0])
    torch.testing.assert_close(result.raw["3"], expected, rtol=1e-7, atol=1e-10)
    assert method.rerun_used["3"] == ("sequential" if rerun == "auto" else rerun)


def test_ablationcam_hook_mode_on_a_wrapped_model() -> None:
    seq, x = spatial_model(), inputs()
    method = AblationCAM(Wrapped(seq), "seq.3", batch_size=3)
    result = method(x, target=CLASSES)
    assert method.rerun_used["seq.3"] == "hook"
    torch.testing.assert_close(result.raw["seq.3"], ablation_ref(seq, x, 3, CLASSES), rtol=1e-7, atol=1e-10)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h) + h)  # h crosses conv2
        return self.fc(h.mean(dim=(2, 3)))


def test_ablationcam_falls_back_to_full_rerun_across_a_skip_connection() -> None:
    model, x = Residual().to(DT).eval(), inputs()
    method = AblationCAM(model, "conv2", batch_size=4)
    with pytest.warns(UserWarning, match="whole network"):
        result = method(x, target=[1, 3])
    assert method.rerun_used["conv2"] == "full"
    full = AblationCAM(model, "conv2", rerun="full")(x, target=[1, 3])
    torch.testing.assert_close(result.raw["conv2"], full.raw["conv2"])
    # reference loop on the network written out by hand
    with torch.no_grad():
        h = torch.relu(model.conv1(x))
        a = model.conv2(h)
        for n, c in enumerate([1, 3]):

            def score(act, n=n, c=c):
                return float(model.fc(torch.relu(act + h[n : n + 1]).mean(dim=(2, 3)))[0, c])

            base = score(a[n : n + 1])
            ws = []
            for k in range(3):
                ab = a[n : n + 1].clone()
                ab[0, k] = 0
                ws.append((base - score(ab)) / base)
            torch.testing.assert_close(result.raw["conv2"][n], loop_map(list(ws).__getitem__, a[n], None))


def test_perturbation_budget_errors_name_the_argument() -> None:
    model = spatial_model()
    with pytest.raises(camlens.InputError, match="memory_budget=0"):
        camlens.ScoreCAM(model, "3", memory_budget=0)
    with pytest.raises(camlens.InputError, match="batch_size=-1"):
        AblationCAM(model, "3", batch_size=-1)
    with pytest.raises(camlens.InputError, match="weighting='bogus'"):
        camlens.ScoreCAM(model, "3", weighting="bogus")
    with pytest.raises(camlens.InputError, match="rerun='sequential'"):
        AblationCAM(Wrapped(model), "seq.3", rerun="sequential")(inputs())


def test_chunk_size_does_not_change_perturbation_maps() -> None:
    model, x = spatial_model(), inputs(3)
    for cls in (camlens.ScoreCAM, AblationCAM):
        one = cls(model, "3", batch_size=1)(x).raw["3"]
        budget = cls(model, "3", memory_budget=20_000)(x).raw["3"]
        torch.testing.assert_close(one, budget)


# ---- FullGrad ----------------------------------------------------------------------------


def bn_model() -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5),
    ).to(DT)  # fmt: skip
    with torch.no_grad():
        for bn in (m[1], m[4]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return m.eval()


def psi_loop(t: torch.Tensor) -> torch.Tensor:
    """|t| min-max normalized over all its (C, h, w) values, then summed over channels."""
    t = t.abs()
    lo, hi = float(t.min()), float(t.max())
    return ((t - lo) / (hi - lo)).sum(dim=0)


def test_fullgrad_matches_loop() -> None:
    model, x = bn_model(), inputs()
    result = camlens.FullGrad(model)(x, target=CLASSES)
    assert sorted(camlens.FullGrad(model).layers) == ["0", "1", "4"]
    for n, c in enumerate(CLASSES):
        xi = x[n : n + 1].clone().requires_grad_(True)
        z0 = model[0](xi)
        z1 = model[1](z0)
        z4 = model[4](model[3](model[2](z1)))
        s = model[5:](z4)[0, c]
        gx, g0, g1, g4 = torch.autograd.grad(s, [xi, z0, z1, z4])
        bn_bias = [
            bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps) for bn in (model[1], model[4])
        ]
        total = psi_loop((gx * x[n : n + 1])[0])
        for g, b in ((g0, model[0].bias), (g1, bn_bias[0]), (g4, bn_bias[1])):
            term = torch.stack([g[0, k] * float(b[k].detach()) for k in range(g.shape[1])])
            total = total + psi_loop(term.detach())
        torch.testing.assert_close(result.raw["fullgrad"][n], total.detach(), rtol=1e-7, atol=1e-10)


def test_fullgrad_layers_select_bias_layers_inside_modules() -> None:
    model = bn_model()
    assert list(camlens.FullGrad(model, ["3", "4"]).layers) == ["4"]
    with pytest.raises(camlens.LayerShapeError, match="no convolution with a bias"):
        camlens.FullGrad(model, "2")


# ---- guided methods and Captum ---------------------------------------------------------


def test_guided_backprop_matches_captum() -> None:
    from captum.attr import GuidedBackprop as CaptumGB

    model, x = spatial_model(), inputs()
    ours = camlens.GuidedBackprop(model)(x, target=CLASSES).raw["input"]
    theirs = CaptumGB(model).attribute(x, target=CLASSES)
    torch.testing.assert_close(ours, theirs)


def test_guided_backprop_loop_on_one_relu() -> None:
    """x -> W x -> ReLU -> v . h: guided gradient is W^T (1[Wx>0] * ReLU(v))."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.ReLU(), nn.Conv2d(3, 1, 1, bias=False),
                          nn.Flatten(), nn.Linear(4, 1, bias=False)).to(DT).eval()  # fmt: skip
    x = torch.randn(1, 1, 2, 2, dtype=DT)
    got = camlens.GuidedBackprop(model)(x, target=0).raw["input"][0, 0]
    w1, v, u = (t.detach() for t in (model[0].weight[:, 0, 0, 0], model[2].weight[0, :, 0, 0], model[4].weight[0]))
    for p, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        expected = 0.0
        for k in range(3):
            pre = float(w1[k]) * float(x[0, 0, i, j])
            incoming = float(u[p]) * float(v[k])
            expected += float(w1[k]) * (1.0 if pre > 0 else 0.0) * relu(incoming)
        assert math.isclose(float(got[i, j]), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam_and_matches_captum() -> None:
    from captum.attr import GuidedGradCam

    model, x = spatial_model(), inputs()
    model = nn.Sequential(*list(model[:4]), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).to(DT).eval()
    ours = camlens.GuidedGradCAM(model, "4")(x, target=CLASSES).raw["4"]
    gb = camlens.GuidedBackprop(model)(x, target=CLASSES).raw["input"]
    cam = camlens.GradCAM(model, "4", normalize=False)(x, target=CLASSES).maps["4"]
    torch.testing.assert_close(ours, gb * cam[:, None])
    theirs = GuidedGradCam(model, model[4]).attribute(x, target=CLASSES, interpolate_mode="bilinear")
    torch.testing.assert_close(ours, theirs)


# ---- smoothing -----------------------------------------------------------------------------


def test_noise_smoothing_is_the_mean_over_noisy_copies() -> None:
    model, x = spatial_model(), inputs()
    smooth = camlens.NoiseSmooth(model, "3", n_samples=4, sigma=0.2, seed=7, batch_size=3)
    result = smooth(x, target=CLASSES)
    eps = smooth.noise(x)
    inner = camlens.GradCAM(model, "3")
    for n, c in enumerate(CLASSES):
        scale = 0.2 * float(x[n].max() - x[n].min())
        copies = [inner(x[n : n + 1] + scale * eps[t : t + 1], target=c).maps["3"][0] for t in range(4)]
        torch.testing.assert_close(result.maps["3"][n], sum(copies) / 4)


def test_tta_smoothing_undoes_the_flip() -> None:
    model, x = spatial_model(), inputs()
    result = camlens.TTASmooth(model, "3", method="hirescam")(x, target=CLASSES)
    inner = camlens.HiResCAM(model, "3")
    plain = inner(x, target=CLASSES).maps["3"]
    flipped = inner(x.flip(-1), target=CLASSES).maps["3"].flip(-1)
    torch.testing.assert_close(result.maps["3"], (plain + flipped) / 2)
    with pytest.raises(camlens.InputError, match="transform 'rot'"):
        camlens.TTASmooth(model, "3", transforms=("rot",))


def test_scorecam_channel_softmax_matches_torchcam_when_no_upsampling_is_needed() -> None:
    """torchcam normalizes before upsampling; at equal resolution both orders agree."""
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    model, x = spatial_model(), inputs()
    ours = camlens.ScoreCAM(model, "3", weighting="channel-softmax")(x, target=CLASSES).maps["3"]
    extractor = TorchcamScoreCAM(model, "3", input_shape=(2, 6, 6))
    try:
        with torch.no_grad():
            scores = model(x)
        (theirs,) = extractor(class_idx=CLASSES, scores=scores)
    finally:
        extractor.remove_hooks()
    torch.testing.assert_close(ours, theirs.to(DT), rtol=0, atol=1e-6)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.conv(torch.relu(self.conv(x))).mean(dim=(2, 3)))


def test_ablationcam_refuses_a_layer_called_twice_and_removes_its_hooks() -> None:
    model, x = Twice().to(DT).eval(), inputs()
    with pytest.raises(camlens.LayerShapeError, match="called more than once"):
        AblationCAM(model, "conv")(x)
    assert all(not m._forward_hooks for m in model.modules())


def test_guided_backprop_warns_without_relu_modules() -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).to(DT).eval()
    with pytest.warns(UserWarning, match="no nn.ReLU"):
        camlens.GuidedBackprop(model)(inputs())


def test_scorecam_channels_last_changes_only_the_memory_order() -> None:
    model, x = spatial_model(), inputs()
    a = camlens.ScoreCAM(model, "3", channels_last=True)(x, target=CLASSES).raw["3"]
    b = camlens.ScoreCAM(model, "3", channels_last=False)(x, target=CLASSES).raw["3"]
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_perturbation_methods_score_callable_targets_on_new_rows() -> None:
    model, x = spatial_model(), inputs()
    for method in (AblationCAM(model, "3"), camlens.ScoreCAM(model, "3", weighting="channel-softmax")):
        by_class = method(x, target=1).raw["3"]
        by_callable = method(x, target=lambda logits: logits[:, 1]).raw["3"]
        torch.testing.assert_close(by_callable, by_class)
