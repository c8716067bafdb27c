"""Where the maps of each class put their mass: per-item figures, the class's mean map, and its hottest regions.

Every map here is a share of mass: the map on the analysis grid, clipped at
zero and scaled to sum 1 (:mod:`camlens.audit.collect`), so a figure such as
"0.4 on the border" reads "40 % of the map's mass lies on the border".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from camlens.audit.collect import Collected

__all__ = ["CORNERS", "Region", "class_mean", "hot_regions", "item_stats", "region_evidence", "widen"]

#: the four corners, each a square of a quarter of the image's side.
CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _bands(grid: tuple[int, int]) -> dict[str, Tensor]:
    """Boolean cell masks: ``border`` (the outer eighth of each side) and each corner (a quarter's square)."""
    gh, gw = grid
    bh, bw = max(1, round(gh / 8)), max(1, round(gw / 8))
    ch, cw = max(1, round(gh / 4)), max(1, round(gw / 4))
    border = torch.ones(grid, dtype=torch.bool)
    border[bh : gh - bh, bw : gw - bw] = False
    out = {"border": border}
    top, bottom, left, right = slice(0, ch), slice(gh - ch, gh), slice(0, cw), slice(gw - cw, gw)
    for name, (rows, cols) in zip(CORNERS, ((top, left), (top, right), (bottom, left), (bottom, right)), strict=True):
        m = torch.zeros(grid, dtype=torch.bool)
        m[rows, cols] = True
        out[name] = m
    return out


def item_stats(c: Collected) -> dict[str, Tensor]:
    """Per-item figures of the audited maps, each ``(n,)`` float (NaN for an empty map).

    Keys: ``border`` and each of :data:`CORNERS` (share of mass there),
    ``object`` (share on the object: the results' own figure when they hold
    it, else from the images' object pixels; absent when neither is known),
    ``half_mass_area`` (the smallest share of the image holding half the mass:
    small = concentrated), ``peak_x``, ``peak_y`` (the hottest cell's centre, in
    input pixels when the input size is known, else in map cells).
    """
    maps, grid = c.maps, tuple(c.maps.shape[-2:])
    nan = torch.full((len(c),), float("nan"))
    out = {name: torch.where(c.empty, nan, maps[:, m].sum(dim=1)) for name, m in _bands(grid).items()}  # type: ignore[arg-type]
    if c.inside is not None:
        out["object"] = c.inside.float()
    elif c.objects is not None:
        out["object"] = torch.where(c.empty, nan, (maps * c.objects.float()).sum(dim=(1, 2)))
    ordered = maps.flatten(1).sort(dim=1, descending=True).values.cumsum(dim=1)
    out["half_mass_area"] = torch.where(c.empty, nan, ((ordered < 0.5).sum(dim=1) + 1) / ordered.shape[1])
    peak = maps.flatten(1).argmax(dim=1)
    sy, sx = _scale(c)
    out["peak_y"] = torch.where(c.empty, nan, ((peak // grid[1]).float() + 0.5) * sy)
    out["peak_x"] = torch.where(c.empty, nan, ((peak % grid[1]).float() + 0.5) * sx)
    return out


def _scale(c: Collected) -> tuple[float, float]:
    """Input pixels per grid cell (map cells per grid cell when the input size is unknown)."""
    gh, gw = c.maps.shape[-2:]
    h, w = c.input_size or c.map_size
    return h / gh, w / gw


def class_mean(c: Collected, rows: Tensor) -> Tensor:
    """The mean map (shares summing to 1) of the non-empty items among ``rows``; zeros if none."""
    keep = rows[~c.empty[rows]]
    if len(keep) == 0:
        return torch.zeros(c.maps.shape[-2:])
    return c.maps[keep].mean(dim=0)


@dataclass
class Region:
    """The evidence that a class's maps sit in one place of the grid.

    Two boxes of grid cells ``(y0, y1, x0, x1)``, end exclusive: ``hot``, the
    smallest box holding a group of hot cells, and ``cells``, that box widened by
    a cell on every side (clipped to the grid): a map places things to within
    about a cell, so the mass, the consistency and the object's share are
    measured on the widened box (a mark a cell wide may sit on the hot box's
    edge; an object next to the hot cells may be what the map means), while the
    concentration is the hot cells' own: widening a one-cell spot on a 6 x 6
    grid to 3 x 3 would divide it by 9.
    """

    cells: tuple[int, int, int, int]
    mass: float  # share of the class's mean map in the widened box
    consistency: float  # share of the class's items with at least half that mass in the widened box
    object_share: float | None  # mean share of each item's object pixels in the widened box
    area: float  # share of the image in the widened box
    hot: tuple[int, int, int, int] | None = None  # the hot cells' own box; None: the widened box
    hot_mass: float | None = None  # share of the mean map in ``hot``
    hot_area: float | None = None  # share of the image in ``hot``
    #: ``[x0, y0, x1, y1]`` in input pixels of the class's fixed pattern at the region (:mod:`camlens.audit.fixed`),
    #: when one is there: the box reported instead of the map's.
    pattern: list[int] | None = None
    pattern_pixels: int = 0

    @property
    def lift(self) -> float | None:
        """Mass in the box over the object's share of it (1: the maps follow the object; large: they do not)."""
        if self.object_share is None:
            return None
        return self.mass / max(self.object_share, 0.01)

    @property
    def concentration(self) -> float:
        """The hot cells' mass over their share of the image (1: no more than a uniform map puts there)."""
        if self.hot_mass is None or self.hot_area is None:
            return self.mass / max(self.area, 1e-12)
        return self.hot_mass / max(self.hot_area, 1e-12)

    def map_box(self, c: Collected) -> list[int]:
        """The widened box ``[x0, y0, x1, y1]`` in input pixels (end exclusive; map cells when the input size is
        unknown)."""
        y0, y1, x0, x1 = self.cells
        sy, sx = _scale(c)
        return [int(x0 * sx), int(y0 * sy), round(x1 * sx), round(y1 * sy)]

    def box(self, c: Collected) -> list[int]:
        """The box reported: the fixed pattern's when one is there, else :meth:`map_box`."""
        return list(self.pattern) if self.pattern is not None else self.map_box(c)


def hot_regions(mean: Tensor, most: int = 3, level: float = 0.5) -> list[tuple[int, int, int, int]]:
    """The smallest boxes around the connected groups of cells where ``mean`` is at least ``level`` of its largest
    value.

    The groups (4-connected) are taken by falling mass, at most ``most`` of
    them. :func:`region_evidence` widens each by a cell.

    Returns:
        ``(y0, y1, x0, x1)`` boxes of grid cells, end exclusive.
    """
    top = float(mean.max())
    if top <= 0:
        return []
    hot = (mean >= level * top).tolist()
    gh, gw = len(hot), len(hot[0])
    seen: set[tuple[int, int]] = set()
    groups: list[tuple[float, tuple[int, int, int, int]]] = []
    for start in ((y, x) for y in range(gh) for x in range(gw) if hot[y][x]):
        if start in seen:
            continue
        stack, cells = [start], []
        seen.add(start)
        while stack:
            y, x = stack.pop()
            cells.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < gh and 0 <= nx < gw and hot[ny][nx] and (ny, nx) not in seen:
                    seen.add((ny, nx))
                    stack.append((ny, nx))
        ys, xs = [p[0] for p in cells], [p[1] for p in cells]
        groups.append((float(sum(mean[y, x] for y, x in cells)), (min(ys), max(ys) + 1, min(xs), max(xs) + 1)))
    groups.sort(key=lambda g: -g[0])
    return [box for _, box in groups[:most]]


def widen(cells: tuple[int, int, int, int], grid: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box ``(y0, y1, x0, x1)`` widened by one cell on every side, clipped to ``grid``."""
    y0, y1, x0, x1 = cells
    return max(y0 - 1, 0), min(y1 + 1, grid[0]), max(x0 - 1, 0), min(x1 + 1, grid[1])


def region_evidence(c: Collected, rows: Tensor, mean: Tensor, hot: tuple[int, int, int, int]) -> Region:
    """How much of class ``rows``' mass sits around the hot box ``hot``, how consistently, how much object is
    there, and how concentrated the hot cells are (:class:`Region`)."""
    gh, gw = mean.shape
    y0, y1, x0, x1 = cells = widen(hot, (gh, gw))
    keep = rows[~c.empty[rows]]
    mass = float(mean[y0:y1, x0:x1].sum())
    per_item = c.maps[keep, y0:y1, x0:x1].sum(dim=(1, 2))
    consistency = float((per_item >= 0.5 * mass).float().mean()) if len(keep) else 0.0
    object_share = None
    if c.objects is not None and len(keep):
        obj = c.objects[keep].float()
        total = obj.sum(dim=(1, 2))
        has = total > 0
        if bool(has.any()):
            object_share = float((obj[has, y0:y1, x0:x1].sum(dim=(1, 2)) / total[has]).mean())
    hy0, hy1, hx0, hx1 = hot
    return Region(
        cells,
        mass,
        consistency,
        object_share,
        (y1 - y0) * (x1 - x0) / (gh * gw),
        hot=hot,
        hot_mass=float(mean[hy0:hy1, hx0:hx1].sum()),
        hot_area=(hy1 - hy0) * (hx1 - hx0) / (gh * gw),
    )
