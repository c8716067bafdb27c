"""Shards on disk: one safetensors file per fixed range of item ids, plus a small record.

Shard ``k`` holds items ``[k * shard_size, min((k + 1) * shard_size, n_items))``
whatever the number of processes, so a run can resume with another world size.
A shard is finished when both files exist and agree::

    shard-000003.safetensors   the tensors, written to a temporary file and renamed
    shard-000003.json          its sha256, size, item range, the run's fingerprint and the sha256
                               of the items it explained (inputs and labels, as read; and of its
                               first batch alone, which a resume reads again to see that the data
                               is unchanged), written (temporary file + rename) only after the shard

A kill between the two renames leaves a shard without a record: it is redone.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from camlens._util.files import atomic_write_bytes
from camlens._util.optional import optional_import
from camlens.dataset.folder import SizeMismatch, read_inside, sweep_temporaries, write_failed
from camlens.errors import DataError

__all__ = [
    "clean_temporaries",
    "finished_record",
    "read_shard",
    "record_problem",
    "shard_file",
    "shard_range",
    "shards_of_rank",
    "write_shard",
]


def _st() -> Any:
    return optional_import("safetensors.torch", "cli", "explain-dataset shards")


def shard_file(k: int) -> str:
    """The file name of shard ``k``."""
    return f"shard-{k:06d}.safetensors"


def _record_file(k: int) -> str:
    return f"shard-{k:06d}.json"


def shard_range(k: int, n_items: int, shard_size: int) -> range:
    """The item ids of shard ``k``."""
    return range(k * shard_size, min((k + 1) * shard_size, n_items))


def shards_of_rank(n_shards: int, rank: int, world: int) -> list[int]:
    """The shards rank ``rank`` of ``world`` computes: ``k % world == rank``."""
    return list(range(rank, n_shards, world))


#: a shard record is a few hundred bytes; anything far larger is not one
RECORD_MAX_BYTES = 1 << 16
#: safetensors' own bound on a header, checked before it is parsed
_HEADER_MAX_BYTES = 100_000_000
_RECORD_FIELDS = {"index": int, "start": int, "stop": int, "bytes": int, "num_classes": int,
                  "file": str, "sha256": str, "fingerprint": str, "items_sha256": str, "probe_sha256": str}  # fmt: skip


def write_shard(folder: Path, k: int, tensors: dict[str, Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Write shard ``k`` and then its record, each atomically; return the record.

    Args:
        folder: the output folder.
        k: the shard index.
        tensors: name -> contiguous CPU tensor.
        info: JSON facts for the record (``fingerprint``, ``start``, ``stop``, ``items_sha256``, ...).

    Raises:
        DataError: a write failed (disk full, permission); the message says what was kept.
    """
    # One metadata key: safetensors does not keep the order of several, and shards must be byte-reproducible.
    meta = json.dumps({"shard": k, "fingerprint": info.get("fingerprint")}, sort_keys=True)
    blob = _st().save(tensors, metadata={"camlens": meta})
    record = {**info, "index": k, "file": shard_file(k), "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    record_bytes = (json.dumps(record, sort_keys=True) + "\n").encode()
    for path, data in ((folder / shard_file(k), blob), (folder / _record_file(k), record_bytes)):
        try:
            atomic_write_bytes(path, data)
        except OSError as e:
            raise write_failed(e, path, folder) from None
    return record


def record_problem(record: Any, k: int) -> str | None:
    """What is wrong with shard ``k``'s record (a field, its value, what was expected), or ``None``."""
    if not isinstance(record, dict):
        return f"is a {type(record).__name__}, not an object"
    for name, kind in _RECORD_FIELDS.items():
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"has {name}={value!r}; expected a {kind.__name__}"
    if record["index"] != k:
        return f"has index={record['index']!r}; expected {k}"
    if record["file"] != shard_file(k):
        return f"has file={record['file']!r}; expected {shard_file(k)!r}, a file inside the folder"
    for name in ("sha256", "items_sha256", "probe_sha256"):
        if not re.fullmatch(r"[0-9a-f]{64}", record[name]):
            return f"has {name}={record[name]!r}; expected 64 hex digits"
    if not 0 <= record["start"] <= record["stop"] or record["bytes"] < 0 or record["num_classes"] < 1:
        return (
            f"has start={record['start']}, stop={record['stop']}, bytes={record['bytes']}, "
            f"num_classes={record['num_classes']}; expected 0 <= start <= stop, bytes >= 0, num_classes >= 1"
        )
    return None


def finished_record(folder: Path, k: int, fingerprint: str, verify: bool = True) -> dict[str, Any] | None:
    """Shard ``k``'s record if the shard is finished, belongs to this run and (``verify``) matches its sha256.

    A record that is unreadable, malformed or names anything but its own shard is not finished: the shard is redone.
    """
    try:
        record = json.loads(read_inside(folder, _record_file(k), "shard record", max_bytes=RECORD_MAX_BYTES))
    except (OSError, ValueError):  # DataError is a ValueError
        return None
    if record_problem(record, k) is not None or record["fingerprint"] != fingerprint:
        return None
    if verify:
        try:
            read_shard(folder, record, f"{_record_file(k)}")
        except (OSError, DataError):
            return None
    return record


def read_shard(folder: Path, record: dict[str, Any], what: str) -> dict[str, Tensor]:
    """Load the shard a (checked) record names, after checking its size and sha256.

    Args:
        folder: the results folder.
        record: the shard's record (``file``, ``bytes``, ``sha256``).
        what: where the record comes from, for errors (``"manifest.json shards[3]"``).

    Raises:
        DataError: the file is missing, outside the folder, not a regular file, of another size
            than recorded, its bytes do not match ``sha256`` (corrupt or truncated), or it is not
            a safetensors file.
    """
    path = folder / str(record["file"])
    try:
        blob = read_inside(folder, record["file"], f"{what} file", size=record["bytes"], max_bytes=record["bytes"])
    except FileNotFoundError:
        raise DataError(
            f"shard {path} listed in the manifest is missing; rerun the same explain-dataset command"
        ) from None
    except SizeMismatch as e:
        raise DataError(
            f"shard {path} is corrupt: sha256 not computed, as {e.args[1]}; "
            "rerun the same explain-dataset command to redo it"
        ) from None
    got = hashlib.sha256(blob).hexdigest()
    if got != record["sha256"]:
        raise DataError(
            f"shard {path} is corrupt: sha256 {got[:16]}... does not match the manifest's {record['sha256'][:16]}... "
            f"({len(blob)} bytes); rerun the same explain-dataset command to redo it"
        )
    return _load(blob, path)


def _load(blob: bytes, path: Path) -> dict[str, Tensor]:
    """safetensors bytes -> tensors; a header that lies about sizes or offsets is a DataError."""
    n = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else -1
    if not 0 < n <= min(_HEADER_MAX_BYTES, len(blob) - 8):
        raise DataError(f"shard {path} is not a safetensors file (header size {n} for {len(blob)} bytes)")
    try:
        return dict(_st().load(blob))
    except Exception as e:  # safetensors raises its own SafetensorError, or ValueError / RuntimeError
        raise DataError(f"shard {path} is not a valid safetensors file ({type(e).__name__}: {e})") from None


def clean_temporaries(folder: Path, shards: list[int]) -> int:
    """Remove temporary files that a killed run left for ``shards``; return how many.

    Only our own temporaries are removed (:func:`camlens.dataset.folder.sweep_temporaries`);
    call it while this run holds the folder's lock.
    """
    return sweep_temporaries(folder, {name for k in shards for name in (shard_file(k), _record_file(k))})
