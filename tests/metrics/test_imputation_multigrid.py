"""The multigrid ROAD imputation against the solver camlens used before (tests/metrics/road_reference.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from road_reference import noisy_linear_impute as old_impute

from camlens.errors import InputError
from camlens.metrics import noisy_linear_impute, road
from camlens.metrics._multigrid import build_hierarchy, neighbour_sum, pcg_solve


def blob_masks(n: int, h: int, w: int, fraction: float, gen: torch.Generator) -> torch.Tensor:
    """Smooth random maps thresholded to remove ``fraction`` of the pixels: one large region, as a CAM removes."""
    s = F.interpolate(torch.rand(n, 1, 5, 5, generator=gen), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    q = s.flatten(1).quantile(1 - fraction, dim=1)[:, None, None]
    return s > q


def masks_of_every_kind(h: int, w: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scattered = torch.rand(4, h, w, generator=gen) < torch.tensor([0.1, 0.5, 0.9, 0.97]).view(4, 1, 1)
    scattered[:, h // 2, w // 2] = False  # a known pixel
    blobs = torch.cat([blob_masks(1, h, w, q, gen) for q in (0.1, 0.5, 0.9)])
    border = torch.zeros(1, h, w, dtype=torch.bool)
    border[0, :, : w // 3] = True  # a removed strip along the image border
    return torch.cat([scattered, blobs, border])


def multigrid(x: torch.Tensor, masks: torch.Tensor, tol: float) -> torch.Tensor:
    """The multigrid solve itself, whatever the image size (the library uses it above SMALL pixels)."""
    hier = build_hierarchy(masks.to(x.dtype))
    u, worst, _ = pcg_solve(hier, hier.mask * neighbour_sum((1 - hier.mask) * x), tol, 100)
    assert worst <= tol
    return torch.where(masks.unsqueeze(1), u, x)


@pytest.mark.parametrize("size", [(1, 7), (4, 4), (5, 6), (13, 9), (28, 28), (33, 40), (64, 50)])
def test_multigrid_equals_the_old_solver_in_float64(size):
    h, w = size
    masks = masks_of_every_kind(h, w)
    if h == 1:
        masks[:, 0, 0] = False
    x = torch.rand(masks.shape[0], 3, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    old = old_impute(x, masks, noise=0.0, tol=1e-13, max_iter=100 * h * w)
    assert (multigrid(x, masks, 1e-13) - old).abs().max() < 1e-10
    new = noisy_linear_impute(x, masks, noise=0.0, tol=1e-13)  # multigrid above 48 pixels, Jacobi-PCG below
    assert (new - old).abs().max() < 1e-10
    assert new[~masks.unsqueeze(1).expand_as(x)].equal(x[~masks.unsqueeze(1).expand_as(x)])


def test_multigrid_in_float32_is_within_1e5_of_the_float64_reference():
    masks = masks_of_every_kind(64, 48, seed=3)
    x = torch.rand(masks.shape[0], 3, 64, 48, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = old_impute(x, masks, noise=0.0, tol=1e-13, max_iter=100_000)
    new = noisy_linear_impute(x.float(), masks, noise=0.0)
    assert new.dtype == torch.float32
    assert (new.double() - ref).abs().max() < 1e-5


def test_noise_draws_equal_the_old_implementation():
    masks = masks_of_every_kind(12, 10)
    x = torch.rand(masks.shape[0], 2, 12, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    old = old_impute(x, masks, noise=0.01, generator=torch.Generator().manual_seed(9), tol=1e-13, max_iter=10_000)
    new = noisy_linear_impute(x, masks, noise=0.01, generator=torch.Generator().manual_seed(9), tol=1e-13)
    assert (new - old).abs().max() < 1e-10


def test_iterations_do_not_grow_with_the_image():
    """The point of the multigrid: 36 times the pixels need a few more iterations (Jacobi-CG: about 6 times more)."""
    counts = []
    for n in (32, 192):
        gen = torch.Generator().manual_seed(5)
        masks = torch.cat([blob_masks(2, n, n, 0.9, gen), torch.rand(2, n, n, generator=gen) < 0.5]).double()
        x = torch.rand(4, 1, n, n, generator=gen, dtype=torch.float64)
        hier = build_hierarchy(masks)
        b = hier.mask * neighbour_sum((1 - hier.mask) * x)
        _, worst, its = pcg_solve(hier, b, 1e-10, 100)
        assert worst <= 1e-10
        counts.append(its)
    assert counts[1] <= counts[0] + 8 and counts[1] < 40, counts


def test_chunks_by_budget_give_the_same_values():
    masks = masks_of_every_kind(20, 20)
    x = torch.rand(masks.shape[0], 3, 20, 20, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    whole = noisy_linear_impute(x, masks, noise=0.0, tol=1e-12)
    one_at_a_time = noisy_linear_impute(x, masks, noise=0.0, tol=1e-12, budget=1)
    assert (whole - one_at_a_time).abs().max() < 1e-10
    masks, x = masks_of_every_kind(56, 60), torch.rand(8, 1, 56, 60, dtype=torch.float64)  # the multigrid path
    whole = noisy_linear_impute(x, masks, noise=0.0, tol=1e-12)
    one_at_a_time = noisy_linear_impute(x, masks, noise=0.0, tol=1e-12, budget=1)
    assert (whole - one_at_a_time).abs().max() < 1e-10


def test_road_probabilities_equal_the_old_imputation_pipeline():
    """ROAD's class probabilities with the new solver equal those on the old solver's images to 1e-5."""
    gen = torch.Generator().manual_seed(7)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 16 * 16, 5)).eval()  # fmt: skip
    x = torch.rand(3, 3, 16, 16, generator=gen)
    maps = torch.rand(3, 16, 16, generator=gen)
    res = road(net, x, maps, percentages=(0.2, 0.5, 0.9), seed=3)
    from camlens.metrics import saliency_rank
    from camlens.metrics.road import road_counts, road_noise

    rank = saliency_rank(maps, 3).view(3, 1, 16, 16)
    counts = road_counts((0.2, 0.5, 0.9), 256)
    eps = road_noise(3, 3, 3, 16, 16, 3)
    masks = torch.cat([rank < counts.view(1, 3, 1, 1), rank >= (256 - counts).view(1, 3, 1, 1)], dim=1)
    imgs = x.double().unsqueeze(1).expand(3, 6, 3, 16, 16).reshape(18, 3, 16, 16)
    filled = old_impute(imgs, masks.reshape(18, 16, 16), noise=0.0, tol=1e-13, max_iter=100_000)
    filled = filled + 0.01 * eps.double().reshape(filled.shape) * masks.reshape(18, 1, 16, 16)
    with torch.no_grad():
        p = net(filled.float()).softmax(1).gather(1, res.classes.repeat_interleave(6)[:, None]).view(3, 6)
    assert (res.morf - p[:, :3]).abs().max() < 1e-5
    assert (res.lerf - p[:, 3:]).abs().max() < 1e-5


def test_a_fully_removed_image_is_still_refused():
    with pytest.raises(InputError, match="every pixel"):
        noisy_linear_impute(torch.rand(2, 1, 9, 9), torch.ones(2, 9, 9, dtype=torch.bool))
