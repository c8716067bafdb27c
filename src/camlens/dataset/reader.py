"""Read an explain-dataset folder lazily: item by id, shard by shard, each shard checked by sha256."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camlens.core.ops import upsample
from camlens.dataset.folder import read_inside
from camlens.dataset.manifest import MANIFEST, check_manifest, read_manifest
from camlens.dataset.shards import read_shard
from camlens.errors import DataError, InputError

__all__ = ["Item", "Results", "open_results"]

_STATS_MAX_BYTES = 1 << 28


@dataclass
class Item:
    """One explained item.

    Attributes:
        id: its index in the dataset.
        label: its label (-1 when the dataset has none).
        pred: the model's arg-max class.
        targets: the explained class, ``()`` or ``(K,)``.
        probs: the softmax probability of each target, shaped like ``targets``.
        maps: ``"<method>/<layer>"`` -> the map at layer resolution, ``(h, w)``
            or ``(K, h, w)``, float32 (converted from the stored dtype).
        inside: ``"<method>/<layer>"`` -> share of map mass on the object (when computed).
        path: the item's file relative to the data folder (image folders), else ``None``.
        geometry: how the photo became the model's input (a :class:`camlens.preprocess.Geometry`:
            ``geometry.to_original(map)`` puts a map on the photo), else ``None``.
    """

    id: int
    label: int
    pred: int
    targets: Tensor
    probs: Tensor
    maps: dict[str, Tensor] = field(repr=False)
    inside: dict[str, Tensor] = field(repr=False)
    path: str | None = None
    geometry: Any = field(default=None, repr=False)


class Results:
    """The results of one explain-dataset run; see :func:`open_results`."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        check_manifest(folder, manifest)
        self.folder = folder
        self.manifest = manifest
        self.config: dict[str, Any] = manifest["config"]
        self.map_keys: list[str] = list(manifest["map_keys"])
        self.shard_size = int(manifest["shard_size"])
        self._shards = sorted(manifest["shards"], key=lambda r: r["index"])
        self._cached: tuple[int, dict[str, Tensor]] | None = None

    def __len__(self) -> int:
        return int(self.manifest["n_items"])

    def __repr__(self) -> str:
        return f"Results({str(self.folder)!r}, items={len(self)}, shards={len(self._shards)}, maps={self.map_keys})"

    @property
    def ids(self) -> range:
        """Every item id, in order."""
        return range(len(self))

    def shard(self, k: int) -> dict[str, Tensor]:
        """Shard ``k``'s tensors (checked against the manifest's sha256; the last one read is kept)."""
        if self._cached is not None and self._cached[0] == k:
            return self._cached[1]
        if not 0 <= k < len(self._shards):
            raise IndexError(f"shard {k} out of range: the run has {len(self._shards)} shards")
        record = self._shards[k]
        tensors = read_shard(self.folder, record, f"{MANIFEST} shard {k}")
        self._check(record, tensors)
        self._cached = (k, tensors)
        return tensors

    def _check(self, record: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        """The shard holds every tensor this run stores, one row per item of its range, ids in order."""
        n = record["stop"] - record["start"]
        for key in ("ids", "labels", "preds", "targets", "probs", *(f"maps/{k}" for k in self.map_keys)):
            t = tensors.get(key)
            if t is None or t.ndim == 0 or t.shape[0] != n:
                got = "missing" if t is None else f"shaped {tuple(t.shape)}"
                raise DataError(
                    f"shard {self.folder / record['file']} does not hold this run's results: {key!r} is {got}, "
                    f"expected {n} rows (items {record['start']}..{record['stop'] - 1}); rerun the same "
                    "explain-dataset command into a new folder"
                )
        if not torch.equal(tensors["ids"], torch.arange(record["start"], record["stop"], dtype=tensors["ids"].dtype)):
            raise DataError(
                f"shard {self.folder / record['file']} holds ids other than {record['start']}..{record['stop'] - 1}; "
                "rerun the same explain-dataset command into a new folder"
            )

    def __iter__(self) -> Iterator[Item]:
        for i in self.ids:
            yield self[i]

    def __getitem__(self, item_id: int) -> Item:
        """The item with id ``item_id`` (reads and verifies its shard on first use)."""
        row, shard = self._locate(item_id)
        maps = {key: _own_size(shard, key, row).float() for key in self.map_keys}
        inside = {key: shard[f"inside/{key}"][row] for key in self.map_keys if f"inside/{key}" in shard}
        paths = self.paths(item_id // self.shard_size)
        return Item(
            id=int(shard["ids"][row]),
            label=int(shard["labels"][row]),
            pred=int(shard["preds"][row]),
            targets=shard["targets"][row],
            probs=shard["probs"][row],
            maps=maps,
            inside=inside,
            path=paths[row] if paths is not None else None,
            geometry=_geometry(shard["geometry"][row]) if "geometry" in shard else None,
        )

    def paths(self, k: int) -> list[str] | None:
        """The files of shard ``k``'s items, relative to the data folder (``None`` when the data had none)."""
        shard = self.shard(k)
        if "path_bytes" not in shard:
            return None
        names = bytes(shard["path_bytes"].numpy()).decode("utf-8").split("\0")
        n = shard["ids"].shape[0]
        if len(names) != n:
            raise DataError(f"shard {k} of {self.folder} lists {len(names)} paths for {n} items; rerun the same "
                            "explain-dataset command into a new folder")  # fmt: skip
        return names

    def table(self) -> Any:
        """One row per item, scalar columns only, as a pandas ``DataFrame``
        (see :func:`camlens.dataset.table.results_table`).

        Raises:
            ImportError: pandas is not installed (with the command that installs it).
        """
        from camlens.dataset.table import results_table

        return results_table(self)

    def _locate(self, item_id: int) -> tuple[int, dict[str, Tensor]]:
        if isinstance(item_id, bool) or not isinstance(item_id, int) or not 0 <= item_id < len(self):
            raise KeyError(f"item id {item_id!r} is not in this run: ids are 0..{len(self) - 1}")
        k, row = divmod(item_id, self.shard_size)
        shard = self.shard(k)
        if int(shard["ids"][row]) != item_id:
            raise DataError(f"shard {k} of {self.folder} holds id {int(shard['ids'][row])} where {item_id} belongs")
        return row, shard

    def map(
        self, item_id: int, key: str | None = None, *, size: Sequence[int] | None = None, normalize: bool = False
    ) -> Tensor:
        """One item's map, float32, optionally upsampled and min-max normalized.

        Args:
            item_id: the item.
            key: ``"<method>/<layer>"``; may be omitted when the run has one.
            size: ``(H, W)`` to upsample to (bilinear, ``align_corners=False``);
                ``None`` keeps the layer's resolution.
            normalize: min-max scale to [0, 1] (after upsampling).

        Returns:
            ``(h, w)`` (or ``(K, h, w)`` for several targets), or ``size``.
        """
        return self.maps([item_id], key, size=size, normalize=normalize)[0]

    def maps(
        self,
        item_ids: Sequence[int],
        key: str | None = None,
        *,
        size: Sequence[int] | None = None,
        normalize: bool = False,
    ) -> Tensor:
        """Several items' maps stacked ``(n, [K,] h, w)``, upsampled in one call when ``size`` is given."""
        key = self._key(key)
        rows = []
        for i in item_ids:
            row, shard = self._locate(int(i))
            rows.append(_own_size(shard, key, row).float())
        if size is not None and len({r.shape for r in rows}) > 1:
            rows = [(upsample(r[None] if r.ndim == 3 else r[None, None], size)[0]).reshape(*r.shape[:-2], *size)
                    for r in rows]  # fmt: skip
        if len({r.shape for r in rows}) > 1:
            raise InputError(
                f"the maps {key} of items {list(item_ids)[:10]} have different sizes "
                f"({sorted({tuple(r.shape[-2:]) for r in rows})}: their inputs had different sizes); "
                "pass size=(H, W) to upsample them to one size, or read them one by one with map()"
            )
        m = torch.stack(rows)
        if size is None and not normalize:
            return m
        m4 = m if m.ndim == 4 else m[:, None]
        if size is not None:
            m4 = upsample(m4, size)
        if normalize:
            from camlens.core.ops import minmax_normalize

            m4 = minmax_normalize(m4)
        return m4 if m.ndim == 4 else m4[:, 0]

    def _key(self, key: str | None) -> str:
        if key is None:
            if len(self.map_keys) != 1:
                raise KeyError(f"this run has several maps per item {self.map_keys}; pass key='<method>/<layer>'")
            return self.map_keys[0]
        if key not in self.map_keys:
            raise KeyError(f"no maps {key!r} in this run; it has {self.map_keys}")
        return key

    def stats(self) -> dict[str, Any]:
        """The per-class statistics written beside the shards."""
        name = self.manifest.get("stats", "class_stats.json")
        path = self.folder / str(name)
        try:
            return dict(json.loads(read_inside(self.folder, name, f"{MANIFEST} stats", max_bytes=_STATS_MAX_BYTES)))
        except (OSError, ValueError, TypeError) as e:
            raise DataError(
                f"cannot read the statistics {path} ({e}); rerun the same command to rewrite them"
            ) from None

    def verify(self) -> None:
        """Check every shard's sha256 now (reading each once).

        Raises:
            DataError: the first missing or corrupt shard, or one that does not hold this run's results.
        """
        for k in range(len(self._shards)):
            self._cached = None
            self.shard(k)


def _own_size(shard: dict[str, Tensor], key: str, row: int) -> Tensor:
    """Row ``row`` of maps ``key`` at its own size (a shard of mixed sizes pads them to the largest)."""
    m = shard[f"maps/{key}"][row]
    hw = shard.get(f"maps_hw/{key}")
    if hw is None:
        return m
    h, w = (int(v) for v in hw[row])
    return m[..., :h, :w]


def _geometry(row: Tensor) -> Any:
    from camlens.preprocess import Geometry

    v = [int(t) for t in row]
    return Geometry(original=(v[0], v[1]), resized=(v[2], v[3]), crop=(v[4], v[5], v[6], v[7]))


def open_results(path: str | Path) -> Results:
    """Open the output folder of a finished :func:`camlens.explain_dataset` run.

    Shards are read only when an item in them is asked for, and each is checked
    against the manifest's sha256 then; only the last shard read is kept in memory.

    Args:
        path: the output folder (or its ``manifest.json``).

    Returns:
        A :class:`Results`: ``results[id]`` is an :class:`Item`;
        ``results.map(id, size=(28, 28))`` upsamples; ``results.stats()``.

    Raises:
        DataError: no manifest, an unfinished run, or (on access) a corrupt shard.

    Example:
        >>> results = camlens.open_results("maps")  # doctest: +SKIP
        >>> results.map(7, "gradcam/seq.4", size=(28, 28)).shape  # doctest: +SKIP
        torch.Size([28, 28])
    """
    folder = Path(path)
    if folder.name == MANIFEST:
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"{folder} {'is not a folder' if folder.exists() else 'does not exist'}; give the output "
                        "folder of `camlens explain-dataset` (its --out)")  # fmt: skip
    manifest = read_manifest(folder)
    if manifest is None:
        raise DataError(f"{folder} has no {MANIFEST}; is it the output folder of `camlens explain-dataset`?")
    if not manifest.get("complete"):
        raise DataError(
            f"the run in {folder} is not finished ({MANIFEST} lists no completed run); "
            "rerun the same explain-dataset command to finish it"
        )
    return Results(folder, manifest)
