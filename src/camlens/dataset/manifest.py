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
from typing import Any

from camlens._util.files import atomic_write_bytes
from camlens.errors import DataError

__all__ = ["FORMAT", "MANIFEST", "check_config", "fingerprint", "read_manifest", "write_manifest"]

FORMAT = "camlens-dataset/1"
MANIFEST = "manifest.json"


def fingerprint(config: dict[str, Any]) -> str:
    """sha256 of the configuration as canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, or ``None`` when there is none.

    Raises:
        DataError: the file is not a camlens dataset manifest.
    """
    path = Path(folder) / MANIFEST
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path} has format {got!r}, expected {FORMAT!r}; is it a camlens explain-dataset folder?")
    return manifest


def check_config(folder: Path, manifest: dict[str, Any] | None, config: dict[str, Any]) -> None:
    """Refuse to resume into ``folder`` when its manifest records another configuration.

    Raises:
        DataError: naming every setting that differs, and what to do.
    """
    if manifest is None or manifest.get("config") == config:
        return
    old = manifest.get("config", {})
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
    atomic_write_bytes(Path(folder) / MANIFEST, data.encode())
