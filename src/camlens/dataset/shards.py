"""Shards on disk: one safetensors file per fixed range of item ids, plus a small record.

Shard ``k`` holds items ``[k * shard_size, min((k + 1) * shard_size, n_items))``
whatever the number of processes, so a run can resume with another world size.
A shard is finished when both files exist and agree::

    shard-000003.safetensors   the tensors, written to a temporary file and renamed
    shard-000003.json          its sha256, size, item range and the run's fingerprint,
                               written (temporary file + rename) only after the shard

A kill between the two renames leaves a shard without a record: it is redone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from torch import Tensor

from camlens._util.files import atomic_write_bytes
from camlens._util.optional import optional_import
from camlens.errors import DataError

__all__ = [
    "clean_temporaries",
    "finished_record",
    "read_shard",
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


def write_shard(folder: Path, k: int, tensors: dict[str, Tensor], info: dict[str, Any]) -> dict[str, Any]:
    """Write shard ``k`` and then its record, each atomically; return the record.

    Args:
        folder: the output folder.
        k: the shard index.
        tensors: name -> contiguous CPU tensor.
        info: JSON facts for the record (``fingerprint``, ``start``, ``stop``).
    """
    # One metadata key: safetensors does not keep the order of several, and shards must be byte-reproducible.
    meta = json.dumps({"shard": k, "fingerprint": info.get("fingerprint")}, sort_keys=True)
    blob = _st().save(tensors, metadata={"camlens": meta})
    record = {**info, "index": k, "file": shard_file(k), "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    atomic_write_bytes(folder / shard_file(k), blob)
    atomic_write_bytes(folder / _record_file(k), (json.dumps(record, sort_keys=True) + "\n").encode())
    return record


def finished_record(folder: Path, k: int, fingerprint: str, verify: bool = True) -> dict[str, Any] | None:
    """Shard ``k``'s record if the shard is finished, belongs to this run and (``verify``) matches its sha256."""
    try:
        record = json.loads((folder / _record_file(k)).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint or record.get("index") != k:
        return None
    if verify:
        try:
            blob = (folder / shard_file(k)).read_bytes()
        except OSError:
            return None
        if len(blob) != record.get("bytes") or hashlib.sha256(blob).hexdigest() != record.get("sha256"):
            return None
    return record


def read_shard(path: Path, sha256: str) -> dict[str, Tensor]:
    """Load a shard's tensors after checking its sha256.

    Raises:
        DataError: the file is missing, or its bytes do not match ``sha256`` (corrupt or truncated).
    """
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            f"shard {path} listed in the manifest is missing; rerun the same explain-dataset command"
        ) from None
    got = hashlib.sha256(blob).hexdigest()
    if got != sha256:
        raise DataError(
            f"shard {path} is corrupt: sha256 {got[:16]}... does not match the manifest's {sha256[:16]}... "
            f"({len(blob)} bytes); rerun the same explain-dataset command to redo it"
        )
    return _st().load(blob)


def clean_temporaries(folder: Path, shards: list[int]) -> int:
    """Remove temporary files that a killed run left for ``shards``; return how many."""
    n = 0
    for k in shards:
        for name in (shard_file(k), _record_file(k)):
            for tmp in folder.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
                n += 1
    return n
