"""The run's manifest: its configuration, versions and the list of finished shards.

``manifest.json`` is written by rank 0 only, always through a temporary file
and a rename: once at the start (``"complete": false``, no shards) so that a
later run with another configuration is refused, and once at the end with
every shard's sha256 (``"complete": true``). A reader never sees a half-listed
manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, NoReturn

from camlens._util.files import atomic_write_bytes
from camlens.dataset.folder import SizeMismatch, read_inside, write_failed
from camlens.dataset.shards import record_problem, shard_range
from camlens.errors import DataError

__all__ = ["FORMAT", "MANIFEST", "check_config", "check_manifest", "fingerprint", "read_manifest", "write_manifest"]

FORMAT = "camlens-dataset/1"
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 1 << 30
#: fields a manifest's shard record does not repeat from the shard's own record
_DEFAULTS = {"fingerprint": "", "num_classes": 1, "probe_sha256": "0" * 64, "items_sha256": "0" * 64}


def fingerprint(config: dict[str, Any]) -> str:
    """sha256 of the configuration as canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or ``None`` when there is none.

    Raises:
        DataError: the file is not a regular file of at most 1 GiB holding a camlens dataset
            manifest with a ``config`` object.
    """
    path = Path(folder) / MANIFEST
    try:
        text = read_inside(Path(folder), MANIFEST, MANIFEST, max_bytes=MANIFEST_MAX_BYTES)
    except FileNotFoundError:
        return None
    except SizeMismatch as e:
        raise DataError(f"{e}: it is not a camlens manifest") from None
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path} has format {got!r}, expected {FORMAT!r}; is it a camlens explain-dataset folder?")
    return manifest


def _bad(path: Path, field: str, value: Any, expected: str) -> NoReturn:
    raise DataError(
        f"{path}: {field} is {value!r}; expected {expected}. The manifest is damaged: "
        "rerun the same explain-dataset command to rewrite it, or into a new folder"
    )


def _int(path: Path, manifest: dict[str, Any], field: str, low: int) -> int:
    value = manifest.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        _bad(path, field, value, f"an int >= {low}")
    return value


def check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Check a finished run's manifest field by field, and its list of shards against its item count.

    Raises:
        DataError: naming the field (``shard_size``, ``shards[3].file``, ...), its value and what was expected.
    """
    path = Path(folder) / MANIFEST
    if not isinstance(manifest.get("config"), dict):
        _bad(path, "config", manifest.get("config"), "an object (the settings of the run)")
    n_items = _int(path, manifest, "n_items", 0)
    shard_size = _int(path, manifest, "shard_size", 1)
    n_shards = _int(path, manifest, "n_shards", 0)
    if n_shards != -(-n_items // shard_size):
        _bad(path, "n_shards", n_shards, f"{-(-n_items // shard_size)} (n_items {n_items} / shard_size {shard_size})")
    keys = manifest.get("map_keys")
    if not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys) and len(set(keys)) == len(keys)):
        _bad(path, "map_keys", keys, "a list of distinct '<method>/<layer>' names")
    if not isinstance(manifest.get("fingerprint"), str):
        _bad(path, "fingerprint", manifest.get("fingerprint"), "a string")
    shards = manifest.get("shards")
    if not isinstance(shards, list):
        _bad(path, "shards", shards, f"a list of {n_shards} shard records")
    seen: dict[int, int] = {}
    for i, record in enumerate(shards):
        k = record.get("index") if isinstance(record, dict) else None
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < n_shards:
            _bad(path, f"shards[{i}].index", k, f"a shard index in 0..{n_shards - 1}")
        if k in seen:
            _bad(path, f"shards[{i}].index", k, f"each shard once (shards[{seen[k]}] is shard {k} too)")
        seen[k] = i
        problem = record_problem({**_DEFAULTS, **record}, k)
        if problem is not None:
            raise DataError(f"{path}: shards[{i}] {problem}. The manifest is damaged: rerun the same "
                            "explain-dataset command to rewrite it, or into a new folder")  # fmt: skip
        want = shard_range(k, n_items, shard_size)
        if (record["start"], record["stop"]) != (want.start, want.stop):
            _bad(path, f"shards[{i}] start..stop", (record["start"], record["stop"]), f"({want.start}, {want.stop})")
    if len(seen) != n_shards:
        missing = [k for k in range(n_shards) if k not in seen]
        _bad(path, "shards", f"a list of {len(shards)} records", f"{n_shards}: shard(s) {missing[:10]} are missing")


def check_config(folder: Path, manifest: dict[str, Any] | None, config: dict[str, Any]) -> None:
    """Refuse to resume into ``folder`` when its manifest records another configuration.

    Raises:
        DataError: naming every setting that differs, and what to do; or the recorded ``config``
            is not an object.
    """
    if manifest is None:
        return
    old = manifest.get("config")
    if not isinstance(old, dict):
        _bad(Path(folder) / MANIFEST, "config", old, "an object (the settings of the run that wrote the folder)")
    if old == config:
        return
    diffs = [
        f"{key}: was {old.get(key)!r}, now {config.get(key)!r}"
        for key in sorted(set(old) | set(config))
        if old.get(key) != config.get(key)
    ]
    raise DataError(
        f"output folder {folder} holds results of another configuration ({'; '.join(diffs)}); "
        "rerun with the recorded settings to resume, or choose a new output folder"
    )


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temporary file, fsync, rename)."""
    data = json.dumps({"format": FORMAT, **manifest}, indent=2, sort_keys=True) + "\n"
    try:
        atomic_write_bytes(Path(folder) / MANIFEST, data.encode())
    except OSError as e:
        raise write_failed(e, Path(folder) / MANIFEST, Path(folder)) from None
