"""Spectral clustering of one class's maps, as SpRAy does (Lapuschkin et al., "Unmasking Clever Hans
predictors and assessing what machines really learn", Nature Communications 2019).

Each map is average-pooled to :data:`SIDE` x :data:`SIDE` cells and scaled to
sum 1. The affinity of two maps is a Gaussian of their Euclidean distance
with self-tuning scales (Zelnik-Manor and Perona 2004: ``sigma_i`` is the
distance from map ``i`` to its 7th nearest neighbour), between all pairs
(:data:`KNN` = 0; a k-nearest-neighbour graph made the eigengap pick too many
clusters on maps that vary smoothly, such as one blob shifted by a pixel). With ``D`` the degree matrix, the
normalized Laplacian is ``L = I - D^-1/2 W D^-1/2``; its smallest eigenvalues
``l_1 <= l_2 <= ...`` count the groups: the number of clusters ``k`` is where
the gap ``l_{k+1} - l_k`` is largest (the eigengap), and k-means on the rows
of the first ``k`` eigenvectors, each scaled to unit length (Ng, Jordan and
Weiss 2001), assigns the maps. A class with more than :data:`MAX_SPECTRAL`
items is clustered on a seeded sample of that many, and every other item joins
the cluster whose mean pooled map is nearest.

All of it is torch (``torch.linalg.eigh`` on a dense matrix of at most
:data:`MAX_SPECTRAL` squared entries): no scipy or scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["MAX_CLUSTERS", "MAX_SPECTRAL", "SIDE", "Clustering", "cluster_maps", "features"]

#: the pooled maps' side (cells).
SIDE = 8
#: the most clusters the eigengap may choose.
MAX_CLUSTERS = 8
#: the most items clustered spectrally per class (the rest are assigned to the nearest cluster).
MAX_SPECTRAL = 1000
#: fewer items than this are one cluster (too few for a graph to say anything).
MIN_ITEMS = 12
#: neighbours kept in the affinity graph (0: all, a dense graph)
KNN = 0


@dataclass
class Clustering:
    """One class's clusters: ``labels (n,)`` in ``0 .. k-1``, ordered by falling size, and the eigenvalues seen."""

    labels: Tensor
    k: int
    eigenvalues: list[float]


def features(maps: Tensor) -> Tensor:
    """Maps ``(n, h, w)`` (shares of mass) -> ``(n, SIDE*SIDE)`` pooled and scaled to sum 1 (zeros stay zeros)."""
    side = (min(SIDE, maps.shape[-2]), min(SIDE, maps.shape[-1]))
    pooled = F.adaptive_avg_pool2d(maps[:, None].float(), side).flatten(1)
    return pooled / pooled.sum(dim=1, keepdim=True).clamp(min=1e-12)


def _affinity(x: Tensor, k: int) -> Tensor:
    """The Gaussian affinity with self-tuning scales, ``(n, n)``; with ``k > 0`` only between k nearest neighbours."""
    d = torch.cdist(x, x)
    n = d.shape[0]
    nearest = d.topk(min(max(k, 7) + 1, n), dim=1, largest=False)
    sigma = nearest.values[:, min(7, n - 1)].clamp(min=1e-9)
    w = torch.exp(-(d**2) / (sigma[:, None] * sigma[None, :]))
    if k > 0:
        keep = torch.zeros_like(w, dtype=torch.bool)
        keep.scatter_(1, nearest.indices[:, : k + 1], True)
        w = torch.where(keep | keep.T, w, torch.zeros_like(w))
    w.fill_diagonal_(0)
    return w


def _kmeans(x: Tensor, k: int, gen: torch.Generator, restarts: int = 4, steps: int = 50) -> Tensor:
    """Lloyd's k-means with k-means++ seeding, the best of ``restarts`` by inertia: labels ``(n,)``."""
    best, best_cost = torch.zeros(x.shape[0], dtype=torch.long), float("inf")
    for _ in range(restarts):
        centres = x[torch.randint(x.shape[0], (1,), generator=gen)]
        for _ in range(1, k):
            d2 = torch.cdist(x, centres).min(dim=1).values ** 2
            p = d2 / d2.sum() if float(d2.sum()) > 0 else torch.full_like(d2, 1 / len(d2))
            centres = torch.cat([centres, x[torch.multinomial(p, 1, generator=gen)]])
        for _ in range(steps):
            labels = torch.cdist(x, centres).argmin(dim=1)
            new = torch.stack([x[labels == j].mean(dim=0) if bool((labels == j).any()) else centres[j]
                               for j in range(k)])  # fmt: skip
            if torch.allclose(new, centres):
                break
            centres = new
        cost = float(((x - centres[labels]) ** 2).sum())
        if cost < best_cost:
            best, best_cost = labels, cost
    return best


def cluster_maps(maps: Tensor, seed: int = 0) -> Clustering:
    """Cluster one class's maps ``(n, h, w)`` (shares of mass, empty maps left out by the caller).

    Returns:
        A :class:`Clustering`; fewer than :data:`MIN_ITEMS` maps are one cluster.
    """
    n = maps.shape[0]
    if n < MIN_ITEMS:
        return Clustering(torch.zeros(n, dtype=torch.long), 1 if n else 0, [])
    x = features(maps)
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randperm(n, generator=gen)[:MAX_SPECTRAL].sort().values if n > MAX_SPECTRAL else torch.arange(n)
    xs = x[sample]
    w = _affinity(xs, k=KNN)
    deg = w.sum(dim=1).clamp(min=1e-12)
    lap = torch.eye(len(xs), dtype=w.dtype) - w / deg.sqrt()[:, None] / deg.sqrt()[None, :]
    values, vectors = torch.linalg.eigh(lap)
    top = min(MAX_CLUSTERS, len(xs) - 1)
    gaps = values[1 : top + 1] - values[:top]
    k = int(gaps.argmax()) + 1
    if k == 1:
        labels = torch.zeros(n, dtype=torch.long)
    else:
        emb = vectors[:, :k].float()
        emb = emb / emb.norm(dim=1, keepdim=True).clamp(min=1e-12)
        sample_labels = _kmeans(emb, k, gen)
        centres = torch.stack(
            [xs[sample_labels == j].mean(dim=0) for j in range(k) if bool((sample_labels == j).any())]
        )
        labels = torch.cdist(x, centres).argmin(dim=1)
        labels[sample] = _compact(sample_labels)
    return _by_size(labels, [float(v) for v in values[: top + 1]])


def _compact(labels: Tensor) -> Tensor:
    """Labels renumbered ``0 .. m-1`` over the values that occur (the order of the centres above)."""
    return torch.unique(labels, return_inverse=True)[1]


def _by_size(labels: Tensor, eigenvalues: list[float]) -> Clustering:
    """Renumber clusters by falling size (0 the largest), ties by first member."""
    values, counts = torch.unique(labels, return_counts=True)
    order = sorted(range(len(values)), key=lambda i: (-int(counts[i]), int(values[i])))
    remap = torch.empty(int(values.max()) + 1, dtype=torch.long)
    for new, i in enumerate(order):
        remap[values[i]] = new
    return Clustering(remap[labels], len(values), eigenvalues)
