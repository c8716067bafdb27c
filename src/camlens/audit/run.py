"""``audit``: from an explain-dataset run to findings (``audit.json``), per-class figures and an explorer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from camlens._util.files import inside_data_folder, prepare_output_folder, writing
from camlens._util.lock import folder_lock
from camlens.audit.clusters import cluster_maps
from camlens.audit.collect import Collected, audit_class, collect
from camlens.audit.findings import BROAD, THRESHOLDS, atypical, cluster_findings, judge_class
from camlens.audit.pictures import PictureWriter
from camlens.audit.report import class_figure, write_json
from camlens.audit.spread import class_mean, item_stats
from camlens.dataset import Results, open_results
from camlens.errors import InputError

__all__ = ["AuditReport", "audit", "choose_map"]


@dataclass
class AuditReport:
    """What :func:`audit` wrote: ``report`` is ``audit.json``'s content."""

    out: Path
    report: dict[str, Any] = field(repr=False)

    @property
    def flagged(self) -> list[dict[str, Any]]:
        """The flagged classes' entries."""
        return [c for c in self.report["classes"] if c["flagged"]]

    def __str__(self) -> str:
        a = self.report["audited"]
        lines = [f"audited {a['map']} on {self.report['n_items']} items (chosen by: {a['chosen_by']})"]
        for c in self.report["classes"]:
            if c["flagged"]:
                lines.append(f"  FLAGGED class {c['class']} ({c['name']}): region {c['region']}: {c['why']}")
        if self.report["images"].startswith("not read"):
            lines.append(f"  nothing judged: images {self.report['images']}")
        elif not self.flagged:
            lines.append("  no class flagged")
        more = [f for f in self.report["findings"] if f["kind"] != "class"]
        lines.append(f"  {len(more)} other finding(s) (clusters, atypical items) in {self.out / 'audit.json'}")
        lines.append(f"explorer: {self.out / 'index.html'} (open it in a browser; no server needed)")
        return "\n".join(lines)


def choose_map(results: Results, method: str | None, layer: str | None, reason: str | None) -> tuple[str, str]:
    """``("<method>/<layer>", chosen by)``: the user's choice, or the run's only map.

    Raises:
        InputError: the run has no such map, or several maps and none was chosen.
    """
    keys = results.map_keys
    if method is None and layer is None:
        if len(keys) == 1:
            return keys[0], reason or "the only map in the results"
        raise InputError(
            f"the results hold several maps {keys}; choose the one to audit with method= and layer= (--method, "
            "--layer): a map faithful for this model, as the evaluation's verdict says (camlens evaluate); "
            "Grad-CAM can miss a shortcut that HiResCAM shows"
        )
    methods = sorted({k.partition("/")[0] for k in keys})
    layers = sorted({k.partition("/")[2] for k in keys})
    m = method or (methods[0] if len(methods) == 1 else None)
    lay = layer or (layers[0] if len(layers) == 1 else None)
    key = f"{m}/{lay}"
    if m is None or lay is None or key not in keys:
        raise InputError(
            f"method={method!r}, layer={layer!r}: the results hold no such map; they hold {keys} "
            "(explain the data again with --methods/--layers to add one)"
        )
    return key, reason or "user"


def _check_out_apart(out: str | Path, data: Any, results: Results) -> None:
    """Refuse an audit folder in the data folder (the one given, or the one the results name): the next run
    would read the audit's pictures as images of the data.

    Raises:
        InputError: ``out`` is such a folder or a folder inside it.
    """
    named = results.config.get("data", {}).get("spec")
    for folder in (data, named):
        if inside_data_folder(out, folder):
            raise InputError(
                f"out={str(out)!r} (--out) is inside the data folder {str(folder)!r}: the audit's pictures "
                "(classes/, items/) would be read as images by the next run on that data; choose an audit folder "
                "outside it"
            )


def _open_data(data: Any, results: Results) -> tuple[Any | None, str]:
    """The dataset to read images from, and how it was found (for the record)."""
    if data is False:
        return None, "not read (data=False)"
    if data is None:
        spec = results.config.get("data", {}).get("spec")
        if not spec:
            return None, "not read: the results do not name their data and none was given (pass data=)"
        from camlens.sources import load_dataset

        try:
            return _as_explained(load_dataset(str(spec))[0], results), f"read from {spec!r}, the data the results name"
        except Exception as e:
            return None, f"not read: the data the results name ({spec!r}) could not be opened ({e})"
    if isinstance(data, (str, Path)):
        from camlens.sources import load_dataset

        return _as_explained(load_dataset(str(data))[0], results), f"read from {str(data)!r}"
    return data, f"read from the dataset given ({type(data).__name__})"


def _as_explained(ds: Any, results: Results) -> Any:
    """An image folder read as the run read it: the recorded resize, crop and channels (not the
    normalization: the audit looks at the pictures), so its images line up with the maps."""
    from dataclasses import replace

    from camlens.preprocess import Preprocess
    from camlens.sources import ImageFolder

    recorded = results.config.get("preprocess")
    if isinstance(ds, ImageFolder) and ds.preprocess is None and isinstance(recorded, dict):
        ds.preprocess = replace(Preprocess.from_dict(recorded), mean=None, std=None)
    return ds


def audit(
    results: str | Path | Results,
    out: str | Path,
    *,
    data: Any = None,
    method: str | None = None,
    layer: str | None = None,
    reason: str | None = None,
    explorer: bool = True,
    seed: int = 0,
) -> AuditReport:
    """Audit an explain-dataset run: where each class's maps put their mass, their clusters, and findings.

    Writes ``out/audit.json`` (``{"classes": [{"class", "name", "flagged", "region", "why", "clusters",
    ...}], "findings": [...], "audited": {...}}``), per-class figures under ``out/classes/`` and, with
    ``explorer``, ``out/index.html`` with its pictures (open it from disk; no server). See docs/audit.md.
    While it runs, torch's kernels run on one thread (restored after: the audit's tensors are small) and
    the pictures are written by as many threads as torch had.

    Args:
        results: the explain-dataset output folder (or the opened :class:`~camlens.dataset.Results`).
        out: the audit's folder (created); not the data folder, nor one inside it.
        data: the explained data (a ``Dataset`` or a spec as explain-dataset takes); ``None``: the data
            the results name, if it can be opened; ``False``: no images (nothing is flagged then: the
            object is unknown).
        method, layer: the map to audit; may be left out when the results hold one map. Choose a map
            that is faithful for the model (the evaluation's verdict).
        reason: why this map, for the record (e.g. the evaluation's verdict); default ``"user"``
            when ``method``/``layer`` are given, ``"the only map in the results"`` otherwise.
        explorer: write ``index.html``, its data and the item pictures.
        seed: the clustering's seed.

    Returns:
        An :class:`AuditReport`.

    Raises:
        InputError: no such map, several maps and none chosen, ``out`` not writable, ``out`` inside the data
            folder (``data``, or the one the results name).
        DataError: unreadable results, or data that does not match them.
        FolderBusyError: another audit writes ``out``.

    Example:
        >>> camlens.audit("maps", "audit", method="hirescam", layer="seq.4").flagged  # doctest: +SKIP
        []
    """
    res = results if isinstance(results, Results) else open_results(results)
    _check_out_apart(out, data, res)
    key, chosen_by = choose_map(res, method, layer, reason)
    ds, images_note = _open_data(data, res)
    folder = prepare_output_folder(out, "the audit folder (out)")
    with ExitStack() as stack, writing(folder, "the files of the previous audit there are kept"):
        stack.enter_context(folder_lock(folder, "camlens audit"))
        threads = stack.enter_context(_items_in_parallel())
        pictures = PictureWriter(folder, len(res.map_keys), workers=threads) if explorer else None
        try:
            c = collect(res, key, ds, pictures)
            report, per_item = _analyse(res, c, key, chosen_by, images_note, folder, seed)
            write_json(folder, report)
            if pictures is not None:
                from camlens.audit.explorer import write_explorer

                write_explorer(folder, report, c, per_item, res.map_keys, pictures.has_images, _paths(res, c))
                pictures.commit()
        finally:
            if pictures is not None:
                pictures.discard()
    return AuditReport(folder, report)


@contextmanager
def _items_in_parallel() -> Iterator[int]:
    """Run torch's kernels on one thread for the audit, and yield the number of threads it had.

    The audit's tensors are small (maps of a few hundred cells, batches of 256 items): splitting each
    kernel over threads costs more than it gains (measured: 2.7 times the CPU time on 2 shared cores,
    docs/audit.md). The threads go to the pictures instead, a batch each. Restored on exit.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _paths(res: Results, c: Collected) -> list[str | None] | None:
    """Each audited item's file, relative to the data folder, when the results keep them (explain-dataset on
    an image folder); ``None`` when they do not (datasets of tensors, such as Fashion-MNIST, have none)."""
    n_shards = -(-len(res) // res.shard_size)
    paths: list[str | None] = []
    for k in range(n_shards):
        names = res.paths(k)
        if names is None:
            return None
        paths += names
    if len(paths) != len(res):
        return None
    return [paths[i] for i in c.ids.tolist()]


def _class_names(res: Results) -> dict[int, str]:
    """Class index -> name, from the run's statistics (which take them from the data); empty if unreadable."""
    try:
        return {int(k): str(v.get("name", k)) for k, v in res.stats().get("classes", {}).items()}
    except Exception:
        return {}


def _analyse(res: Results, c: Collected, key: str, chosen_by: str, images_note: str, folder: Path,
             seed: int) -> tuple[dict[str, Any], dict[str, Tensor]]:  # fmt: skip
    """Per class: spread, judgement, clusters, atypical items, figure; the report and per-item columns."""
    names = _class_names(res)
    group = audit_class(c.labels, c.targets)
    stats = item_stats(c)
    n = len(c)
    cluster_of = torch.full((n,), -1, dtype=torch.long)
    agreement = torch.full((n,), float("nan"))
    odd = torch.zeros(n, dtype=torch.bool)
    classes, findings = [], []
    for cls in group.unique().tolist():
        rows = torch.nonzero(group == cls)[:, 0]
        entry = _audit_class(res, c, rows, int(cls), names, stats, folder, seed)
        keep = rows[~c.empty[rows]]
        cluster_of[keep] = entry.pop("_labels")
        agreement[rows], odd[rows] = atypical(c, rows, entry.pop("_mean"))
        odd_ids = c.ids[rows][odd[rows]]
        entry["atypical_items"] = {"count": len(odd_ids), "ids": [int(i) for i in odd_ids[:50]]}
        classes.append(entry)
        findings.extend(_findings_of(entry))
    method, _, layer = key.partition("/")
    report = {
        "audited": {"map": key, "method": method, "layer": layer, "chosen_by": chosen_by,
                    "maps_in_results": res.map_keys},
        "results": str(res.folder), "n_items": n, "images": images_note,
        "input_size": list(c.input_size) if c.input_size else None, "map_size": list(c.map_size),
        "grid": list(c.maps.shape[-2:]), "group_by": "label (the explained class when an item has none)",
        "thresholds": THRESHOLDS, "classes": classes, "findings": findings,
    }  # fmt: skip
    per_item = {"cluster": cluster_of, "agreement": agreement, "atypical": odd, **stats}
    return report, per_item


def _nanmean(t: Tensor) -> float | None:
    ok = t[~t.isnan()]
    return float(ok.mean()) if len(ok) else None


def _audit_class(res: Results, c: Collected, rows: Tensor, cls: int, names: dict[int, str],
                 stats: dict[str, Tensor], folder: Path, seed: int) -> dict[str, Any]:  # fmt: skip
    mean = class_mean(c, rows)
    flagged, region, why = judge_class(c, rows, mean)
    keep = rows[~c.empty[rows]]
    clustering = cluster_maps(c.maps[keep], seed=seed)
    clusters = cluster_findings(c, rows, clustering)
    box = region.box(c) if region is not None else None
    background = c.mean_images.get(cls)
    figure = class_figure(folder, f"{cls}", background, mean, box if flagged else None, c.input_size)
    for cl in clusters:
        member = keep[clustering.labels == cl["cluster"]]
        cl["prototype"] = class_figure(folder, f"{cls}-cluster{cl['cluster']}", background,
                                       class_mean(c, member), None, c.input_size)  # fmt: skip
    labelled = c.labels[rows] >= 0
    evidence = None
    if region is not None:
        evidence = {"box": box, "mass": region.mass, "consistency": region.consistency,
                    "object_share": region.object_share, "lift": region.lift, "area": region.area,
                    "hot_mass": region.hot_mass, "hot_area": region.hot_area, "concentration": region.concentration,
                    "map_box": region.map_box(c), "fixed_pattern_pixels": region.pattern_pixels}  # fmt: skip
    return {
        "class": cls, "name": names.get(cls, str(cls)), "flagged": flagged, "region": box if flagged else None,
        "why": why, "clusters": clusters, "n": len(rows), "empty_maps": int(c.empty[rows].sum()),
        "accuracy": float((c.preds[rows] == c.labels[rows])[labelled].float().mean()) if bool(labelled.any()) else None,
        "mean_confidence": float(c.probs[rows].mean()),
        "spread": {k: _nanmean(v[rows]) for k, v in stats.items() if not k.startswith("peak")},
        "evidence": evidence, "figure": figure, "_labels": clustering.labels, "_mean": mean,
    }  # fmt: skip


def _findings_of(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The class's findings, for the report's flat list."""
    out: list[dict[str, Any]] = []
    if entry["flagged"]:
        out.append({"kind": "class", "class": entry["class"], "region": entry["region"], "why": entry["why"],
                    "evidence": entry["evidence"]})  # fmt: skip
    elif entry["why"].startswith(BROAD):
        out.append({"kind": "broad_region", "class": entry["class"], "region": entry["evidence"]["box"],
                    "why": entry["why"], "evidence": entry["evidence"]})  # fmt: skip
    for cl in entry["clusters"]:
        if cl["differs"]:
            why = (
                f"cluster {cl['cluster']} ({cl['size']} items, {cl['share']:.0%} of the class) shares only "
                f"{cl['overlap_with_rest']:.0%} of its prototype's mass with the rest of the class"
            )
            out.append({"kind": "cluster", "class": entry["class"], "cluster": cl["cluster"], "size": cl["size"],
                        "why": why})  # fmt: skip
    odd = entry["atypical_items"]
    if odd["count"]:
        out.append({"kind": "items", "class": entry["class"], "count": odd["count"], "ids": odd["ids"][:20],
                    "why": f"{odd['count']} item(s) whose map overlaps the class's mean map far less than the "
                           "class's others do"})  # fmt: skip
    return out
