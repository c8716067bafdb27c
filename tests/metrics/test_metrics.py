"""Metric values on hand-worked 4x4 images with a known pixel ordering."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camlens.errors import InputError
from camlens.metrics import (
    blur,
    boxes_to_mask,
    confidence_change,
    deletion,
    edge_map,
    energy_pointing_game,
    insertion,
    intensity_map,
    noisy_linear_impute,
    object_mask,
    random_map,
    rank_average,
    road,
    saliency_rank,
    spearman,
    ssim,
)


def sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


class SumModel(nn.Module):
    """Two classes: logit 0 = sum of the pixels, logit 1 = 0, so p_0 = sigmoid(sum x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).sum(dim=1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


# Pixel values, row-major: the first row is 1s, the second 0.5s, the rest 0.
X = torch.tensor([[1.0] * 4, [0.5] * 4, [0.0] * 4, [0.0] * 4]).view(1, 1, 4, 4).double()
# Saliency 15..0 row-major: pixel 0 is the most salient, pixel 15 the least.
MAP = torch.arange(15, -1, -1).view(1, 4, 4).double()


def test_saliency_rank_known_order_and_seeded_ties():
    rank = saliency_rank(MAP)
    assert rank.tolist() == [list(range(16))]
    tied = torch.zeros(1, 4, 4)
    tied[0, 0, 0] = 2.0  # one clear winner, fifteen ties
    orders = {tuple(saliency_rank(tied, seed=s)[0].tolist()) for s in range(6)}
    assert all(o[0] == 0 for o in orders)  # the winner always ranks first
    assert len(orders) > 1  # the ties are ordered by the seed...
    assert saliency_rank(tied, seed=3).equal(saliency_rank(tied, seed=3))  # ...reproducibly
    for o in orders:
        assert sorted(o) == list(range(16))


def test_deletion_curve_and_auc_by_hand():
    res = deletion(SumModel().double(), X, MAP, target=0, steps=4, baseline="zero")
    # Each step removes one row: remaining sums 6, 2, 0, 0, 0.
    expected = [sig(6), sig(2), sig(0), sig(0), sig(0)]
    assert res.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert res.curves[0].tolist() == pytest.approx(expected, abs=1e-12)
    auc = (expected[0] / 2 + expected[1] + expected[2] + expected[3] + expected[4] / 2) / 4
    assert float(res.auc[0]) == pytest.approx(auc, abs=1e-12)


def test_insertion_curve_by_hand_and_reverse_map_is_worse():
    res = insertion(SumModel().double(), X, MAP, target=0, steps=4, baseline="zero")
    expected = [sig(0), sig(4), sig(6), sig(6), sig(6)]
    assert res.curves[0].tolist() == pytest.approx(expected, abs=1e-12)
    worse = insertion(SumModel().double(), X, -MAP, target=0, steps=4, baseline="zero")
    assert worse.curves[0].tolist() == pytest.approx([sig(0), sig(0), sig(0), sig(2), sig(6)], abs=1e-12)
    assert float(worse.auc[0]) < float(res.auc[0])


def test_deletion_with_a_constant_baseline_and_batch_invariance():
    x2 = torch.cat([X, X.flip(2)])
    m2 = torch.cat([MAP, MAP.flip(1)])
    res = deletion(SumModel().double(), x2, m2, target=0, steps=4, baseline=0.25)
    # Removing a row replaces its 4 pixels by 0.25 each (+1 per row).
    expected = [sig(6), sig(3), sig(1 + 1), sig(3), sig(4)]
    assert res.curves[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert res.curves[1].tolist() == pytest.approx(expected, abs=1e-12)  # flipped image, flipped map


def test_blur_is_a_normalized_separable_gaussian():
    delta = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    delta[0, 0, 2, 2] = 1.0
    out = blur(delta, sigma=1.0, kernel_size=3)
    g0 = 1.0 / (1.0 + 2.0 * math.exp(-0.5))
    g1 = math.exp(-0.5) * g0
    assert float(out[0, 0, 2, 2]) == pytest.approx(g0 * g0)
    assert float(out[0, 0, 1, 2]) == pytest.approx(g1 * g0)
    assert float(out[0, 0, 1, 1]) == pytest.approx(g1 * g1)
    const = torch.full((1, 2, 4, 4), 0.7)
    assert torch.allclose(blur(const), const)


# ---- ROAD ------------------------------------------------------------------------------------------


def reference_impute(img: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The paper's system written as plain loops: one equation per removed pixel, dense solve."""
    h, w = img.shape
    unknown = [(i, j) for i in range(h) for j in range(w) if mask[i, j]]
    index = {p: k for k, p in enumerate(unknown)}
    a = torch.zeros(len(unknown), len(unknown), dtype=torch.float64)
    b = torch.zeros(len(unknown), dtype=torch.float64)
    for (i, j), k in index.items():
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if di == dj == 0:
                    continue
                ii, jj = i + di, j + dj
                if not (0 <= ii < h and 0 <= jj < w):
                    continue
                wgt = 1 / 6 if di == 0 or dj == 0 else 1 / 12
                a[k, k] += wgt
                if (ii, jj) in index:
                    a[k, index[(ii, jj)]] -= wgt
                else:
                    b[k] += wgt * float(img[ii, jj])
    sol = torch.linalg.solve(a, b)
    out = img.clone().double()
    for (i, j), k in index.items():
        out[i, j] = sol[k]
    return out


def test_imputation_of_single_pixels_by_hand():
    img = (torch.arange(16, dtype=torch.float64) ** 2).view(1, 1, 4, 4)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = True
    mask[0, 0, 3] = True  # a corner: neighbours (0,2), (1,3) direct, (1,2) diagonal
    out = noisy_linear_impute(img, mask, noise=0.0)
    v = img[0, 0]
    inner = (v[0, 1] + v[1, 0] + v[1, 2] + v[2, 1]) / 6 + (v[0, 0] + v[0, 2] + v[2, 0] + v[2, 2]) / 12
    corner = (v[0, 2] / 6 + v[1, 3] / 6 + v[1, 2] / 12) / (1 / 6 + 1 / 6 + 1 / 12)
    assert float(out[0, 0, 1, 1]) == pytest.approx(float(inner), rel=1e-9)  # 1 + 16 + 36 + 81 ... by formula
    assert float(out[0, 0, 0, 3]) == pytest.approx(float(corner), rel=1e-9)
    keep = ~mask[0]
    assert out[0, 0][keep].equal(v[keep])


def test_imputation_of_two_coupled_pixels_by_hand():
    img = torch.tensor([[3.0, 1, 4, 1], [5, 9, 2, 6], [5, 3, 5, 8], [9, 7, 9, 3]], dtype=torch.float64)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1, 1] = mask[0, 1, 2] = True  # neighbours of each other (direct, weight 1/6)
    # a = Ka + b/6, b = Kb + a/6  =>  a = (Ka + Kb/6) / (1 - 1/36)
    ka = (img[0, 1] + img[1, 0] + img[2, 1]) / 6 + (img[0, 0] + img[0, 2] + img[2, 0] + img[2, 2]) / 12
    kb = (img[0, 2] + img[1, 3] + img[2, 2]) / 6 + (img[0, 1] + img[0, 3] + img[2, 1] + img[2, 3]) / 12
    a = (ka + kb / 6) / (1 - 1 / 36)
    b = kb + a / 6
    out = noisy_linear_impute(img.view(1, 1, 4, 4), mask, noise=0.0)
    assert float(out[0, 0, 1, 1]) == pytest.approx(float(a), rel=1e-9)
    assert float(out[0, 0, 1, 2]) == pytest.approx(float(b), rel=1e-9)


def test_imputation_matches_the_dense_reference_at_90_percent():
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 2, 6, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 6, 5, generator=gen) < 0.9
    mask[:, 0, 0] = False  # at least one known pixel
    out = noisy_linear_impute(img, mask, noise=0.0)
    for n in range(3):
        for c in range(2):
            assert torch.allclose(out[n, c], reference_impute(img[n, c], mask[n]), atol=1e-8)


def test_imputation_noise_is_seeded_and_only_on_removed_pixels():
    img = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, 1:3, 1:3] = True
    clean = noisy_linear_impute(img, mask, noise=0.0)
    a = noisy_linear_impute(img, mask, noise=0.01, generator=torch.Generator().manual_seed(5))
    b = noisy_linear_impute(img, mask, noise=0.01, generator=torch.Generator().manual_seed(5))
    assert a.equal(b)
    assert a[~mask.unsqueeze(1)].equal(img[~mask.unsqueeze(1)])
    eps = torch.randn(clean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.allclose((a - clean)[mask.unsqueeze(1)], 0.01 * eps[mask.unsqueeze(1)], atol=1e-9)


def test_imputation_rejects_a_fully_removed_image():
    with pytest.raises(InputError, match="every pixel"):
        noisy_linear_impute(torch.rand(1, 1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))


def test_road_curves_equal_the_reference_pipeline():
    res = road(SumModel().double(), X, MAP, target=0, percentages=(0.25, 0.5, 0.75), noise=0.0)
    for k, q in enumerate((0.25, 0.5, 0.75)):
        n = round(q * 16)
        most = (torch.arange(16) < n).view(4, 4)  # MAP ranks pixels row-major
        least = (torch.arange(16) >= 16 - n).view(4, 4)
        p_most = sig(float(reference_impute(X[0, 0], most).sum()))
        p_least = sig(float(reference_impute(X[0, 0], least).sum()))
        assert float(res.morf[0, k]) == pytest.approx(p_most, abs=1e-9)
        assert float(res.lerf[0, k]) == pytest.approx(p_least, abs=1e-9)
    assert float(res.score[0]) == pytest.approx(float((res.lerf - res.morf).mean()), abs=1e-12)
    assert float(res.score[0]) > 0  # removing the bright rows first hurts more


# ---- Average Drop / Increase in Confidence ------------------------------------------------------------


def test_average_drop_and_increase_by_hand():
    x = torch.cat([X, X - 0.5])  # the second image has negative pixels
    maps = torch.stack([torch.full((4, 4), 0.5), (torch.arange(16) < 4).view(4, 4).double()])
    res = confidence_change(SumModel().double(), x, maps.double(), target=0)
    y = [sig(6.0), sig(6.0 - 8.0)]
    o = [sig(3.0), sig(2.0)]  # half of every pixel; only the first row (0.5 each) of the second image
    assert res.full.tolist() == pytest.approx(y)
    assert res.masked.tolist() == pytest.approx(o)
    assert res.drop.tolist() == pytest.approx([(y[0] - o[0]) / y[0], 0.0])
    assert res.increase.tolist() == [0.0, 1.0]
    assert res.average_drop == pytest.approx(50.0 * (y[0] - o[0]) / y[0])
    assert res.increase_in_confidence == pytest.approx(50.0)


def test_confidence_rejects_unnormalized_maps():
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        confidence_change(SumModel(), X.float(), MAP.float())


# ---- pointing game -----------------------------------------------------------------------------------


def test_energy_pointing_game_by_hand():
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # 3/4 of the energy on the object
    maps[1] = 1.0  # uniform
    mask = torch.zeros(3, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True  # 4 of 16 pixels
    raw = energy_pointing_game(maps, mask, area_normalized=False)
    # the zero map puts no energy anywhere: 0/0 is NaN (as the dataset statistics' mass_inside)
    assert raw.tolist() == pytest.approx([0.75, 0.25, math.nan], nan_ok=True)
    assert energy_pointing_game(maps, mask).tolist() == pytest.approx([3.0, 1.0, math.nan], nan_ok=True)
    boxed = energy_pointing_game(maps, boxes=[[(0, 0, 2, 2)]] * 3)
    assert boxed.tolist() == pytest.approx([3.0, 1.0, math.nan], nan_ok=True)
    assert boxes_to_mask(torch.tensor([[0, 0, 2, 2]]), (4, 4)).equal(mask[:1])


def test_object_mask_is_the_nonzero_pixels():
    assert object_mask(X).equal(X[:, 0] != 0)


def test_pointing_game_errors_name_the_problem():
    with pytest.raises(InputError, match="exactly one"):
        energy_pointing_game(torch.rand(1, 4, 4))
    with pytest.raises(InputError, match="empty"):
        energy_pointing_game(torch.rand(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool))
    with pytest.raises(InputError, match="nonnegative"):
        energy_pointing_game(-torch.rand(1, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool))


# ---- similarity --------------------------------------------------------------------------------------


def test_spearman_by_hand_with_and_without_ties():
    a = torch.tensor([[1.0, 2, 3, 4], [0, 0, 1, 2]])
    b = torch.tensor([[1.0, 3, 2, 4], [1, 2, 3, 4]])
    assert rank_average(a).tolist() == [[1, 2, 3, 4], [1.5, 1.5, 3, 4]]
    rho = spearman(a, b)
    assert float(rho[0]) == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert float(rho[1]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert float(spearman(a, -a)[0]) == pytest.approx(-1.0)


def reference_ssim(a: torch.Tensor, b: torch.Tensor, win: int, sigma: float) -> float:
    g = [math.exp(-((i - win // 2) ** 2) / (2 * sigma**2)) for i in range(win)]
    s = sum(g)
    g = [v / s for v in g]
    h, w = a.shape
    c1, c2 = 0.01**2, 0.03**2
    vals = []
    for i in range(h - win + 1):
        for j in range(w - win + 1):
            mu_a = mu_b = saa = sbb = sab = 0.0
            for u in range(win):
                for v in range(win):
                    k = g[u] * g[v]
                    pa, pb = float(a[i + u, j + v]), float(b[i + u, j + v])
                    mu_a += k * pa
                    mu_b += k * pb
                    saa += k * pa * pa
                    sbb += k * pb * pb
                    sab += k * pa * pb
            saa, sbb, sab = saa - mu_a**2, sbb - mu_b**2, sab - mu_a * mu_b
            vals.append(((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2)))
    return sum(vals) / len(vals)


def test_ssim_matches_a_loop_reference():
    gen = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 4, 4, generator=gen), torch.rand(2, 4, 4, generator=gen)
    got = ssim(a, b, window=3, sigma=1.5)
    for n in range(2):
        assert float(got[n]) == pytest.approx(reference_ssim(a[n], b[n], 3, 1.5), abs=1e-6)
    assert ssim(a, a).tolist() == pytest.approx([1.0, 1.0])


# ---- baselines ---------------------------------------------------------------------------------------


def test_edge_map_of_a_step_by_hand():
    step = torch.tensor([[0.0, 0, 1, 1]] * 4).view(1, 1, 4, 4)
    # Sobel x across the step: 1 + 2 + 1 = 4 at columns 1 and 2, 0 elsewhere; normalized to 1.
    assert edge_map(step)[0].tolist() == [[0.0, 1.0, 1.0, 0.0]] * 4


def test_intensity_and_random_maps():
    img = torch.stack([X[0, 0], 2 * X[0, 0]]).unsqueeze(0).float()  # two channels
    assert intensity_map(img)[0].tolist() == (X[0, 0] / X.max()).tolist()
    r = random_map(img, seed=4)
    assert r.shape == (1, 4, 4) and float(r.min()) >= 0 and float(r.max()) < 1
    assert r.equal(random_map(img, seed=4)) and not r.equal(random_map(img, seed=5))


def test_metric_inputs_are_checked():
    with pytest.raises(InputError, match=r"maps has shape \(1, 3, 3\)"):
        deletion(SumModel(), X.float(), torch.rand(1, 3, 3))
    with pytest.raises(InputError, match="steps=0"):
        deletion(SumModel(), X.float(), MAP.float(), steps=0)
    with pytest.raises(InputError, match="baseline='gray'"):
        insertion(SumModel(), X.float(), MAP.float(), baseline="gray")
    with pytest.raises(InputError, match="percentages"):
        road(SumModel(), X.float(), MAP.float(), percentages=(0.5, 1.0))
    with pytest.raises(InputError, match="NaN"):
        deletion(SumModel(), X.float(), torch.full((1, 4, 4), float("nan")))


def test_float32_imputation_is_within_a_tenth_of_the_noise_of_the_exact_solve():
    # A 28x28 image with large contiguous holes (the hard case for the solver), float32 default tolerance.
    gen = torch.Generator().manual_seed(1)
    img = torch.rand(1, 1, 28, 28, generator=gen)
    smooth = F.avg_pool2d(torch.rand(1, 1, 28, 28, generator=gen), 9, 1, 4)[0, 0]
    for q in (0.3, 0.9):
        mask = smooth >= torch.quantile(smooth.flatten(), 1 - q)
        out = noisy_linear_impute(img, mask[None], noise=0.0)
        assert out.dtype == torch.float32
        exact = reference_impute(img[0, 0].double(), mask)
        assert float((out[0, 0].double() - exact).abs().max()) < 1e-3  # the noise is N(0, 0.01)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_faithfulness_equals_the_single_metrics(channels_last):
    from camlens.metrics import confidence_change, insertion, random_map
    from camlens.metrics.batched import faithfulness

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 4)).eval()
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    maps = {"a": random_map(x, 7), "b": x[:, 0].clone()}
    strides = [p.stride() for p in model.parameters()]
    classes, scores = faithfulness(model, x, maps, seed=4, steps=5, chunk_images=2, channels_last=channels_last)
    for name, mp in maps.items():
        d = deletion(model, x, mp, steps=5, seed=4)
        i = insertion(model, x, mp, steps=5, seed=4)
        r = road(model, x, mp, seed=4)
        c = confidence_change(model, x, mp)
        s = scores[name]
        assert classes.equal(d.classes)
        for got, want in ((s.deletion, d.curves), (s.insertion, i.curves), (s.morf, r.morf), (s.lerf, r.lerf),
                          (s.full, c.full), (s.masked, c.masked)):
            assert torch.allclose(got, want, atol=1e-6)
    assert [p.stride() for p in model.parameters()] == strides  # the user's model is not converted


def test_saliency_rank_of_stacked_maps_equals_one_map_at_a_time():
    maps = torch.rand(3, 4, 5, 5, generator=torch.Generator().manual_seed(0)).round(decimals=1)  # many ties
    stacked = saliency_rank(maps, seed=2)
    assert stacked.shape == (3, 4, 25)
    for g in range(3):
        assert stacked[g].equal(saliency_rank(maps[g], seed=2))


def test_one_step_curves_and_faithfulness_agree_without_inner_steps():
    from camlens.metrics.batched import faithfulness

    x = torch.cat([X, X.flip(2)])
    maps = torch.cat([MAP, MAP.flip(1)]) / 15
    model = SumModel().double()
    _, scores = faithfulness(model, x, {"m": maps}, steps=1, percentages=(0.5,), noise=0.0)
    d = deletion(model, x, maps, steps=1)
    assert d.curves.flatten().tolist() == pytest.approx([sig(6), sig(0)] * 2, abs=1e-12)
    assert scores["m"].deletion.equal(d.curves)


def test_dataset_mass_inside_is_the_raw_pointing_game_with_one_answer_for_a_zero_map():
    from camlens.dataset import stats

    assert stats.object_mask is object_mask
    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    x[:, :, :2] = 0
    x[1, 0, 2:] = 0  # channel 0 dark, channel 1 not: still the object
    assert object_mask(x).equal((x != 0).any(dim=1))
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(3))
    maps[2] = 0
    mask = object_mask(x)
    raw = energy_pointing_game(maps, mask, area_normalized=False)
    mass = stats.mass_inside(maps[:, None], mask)[:, 0]
    assert raw[:2].equal(mass[:2])
    assert math.isnan(float(raw[2])) and math.isnan(float(mass[2]))
