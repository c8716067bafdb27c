"""Checkpoints: weights in safetensors plus a JSON file, written so a kill never breaks one.

A checkpoint is a folder::

    ckpt/
      meta.json                      architecture, classes, data, epochs, accuracy,
                                     camlens version, and the weights file's name + sha256
      weights-<sha256[:16]>.safetensors

Saving writes the new weights under a new name (the old checkpoint stays
intact), then replaces ``meta.json`` atomically (temporary file + rename: the
commit point), then removes the old weights file. A process killed at any
moment leaves the old checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from camlens._util.files import atomic_write_bytes, atomic_write_text, sha256_bytes
from camlens._util.optional import optional_import
from camlens._util.version import VERSION
from camlens.errors import DataError

__all__ = ["load_checkpoint", "read_meta", "save_checkpoint"]

META = "meta.json"
FORMAT = "camlens-checkpoint/1"


def _safetensors() -> Any:
    return optional_import("safetensors.torch", "cli", "checkpoints")


def save_checkpoint(path: str | Path, model: nn.Module, meta: Mapping[str, Any]) -> Path:
    """Save ``model``'s weights and ``meta`` as the checkpoint folder ``path``.

    Args:
        path: the checkpoint folder (created if needed).
        model: the model; its ``state_dict()`` is saved (on CPU, contiguous).
        meta: JSON-serialisable facts: at least ``"architecture"`` (a name in
            :data:`camlens.demo.models.MODELS`), and typically ``"model_kwargs"``,
            ``"classes"``, ``"data"``, ``"epochs"``, ``"accuracy"``.

    Returns:
        The folder.
    """
    if "architecture" not in meta:
        raise ValueError("meta must name the 'architecture' (a key of camlens.demo.models.MODELS)")
    st = _safetensors()
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    blob = st.save(tensors)
    digest = sha256_bytes(blob)
    weights_name = f"weights-{digest[:16]}.safetensors"
    atomic_write_bytes(folder / weights_name, blob)
    full = {**meta, "format": FORMAT, "camlens_version": VERSION, "weights": weights_name, "sha256": digest}
    atomic_write_text(folder / META, json.dumps(full, indent=2, sort_keys=True) + "\n")
    # The old weights, and any left by a save killed before its commit point.
    for stale in folder.glob("weights-*.safetensors"):
        if stale.name != weights_name:
            stale.unlink(missing_ok=True)
    return folder


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's ``meta.json`` as a dict (checked for the format)."""
    folder = Path(path)
    meta_path = folder / META
    if not meta_path.is_file():
        raise DataError(f"{folder} is not a camlens checkpoint: no {META} in it (train one with `camlens train`)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise DataError(f"{meta_path} is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder, in eval mode, with its weights.

    Checks that the weights file is the one ``meta.json`` names (sha256) and that
    its tensors fit the recorded architecture exactly.

    Returns:
        ``(model, meta)``.

    Raises:
        DataError: missing or mismatched files, or weights that do not fit.
    """
    from camlens.demo.models import build_model

    st = _safetensors()
    folder = Path(path)
    meta = read_meta(folder)
    weights = folder / meta["weights"]
    try:
        blob = weights.read_bytes()
    except FileNotFoundError:
        raise DataError(f"checkpoint {folder}: weights file {meta['weights']} named in {META} is missing") from None
    if sha256_bytes(blob) != meta["sha256"]:
        raise DataError(f"checkpoint {folder}: {meta['weights']} does not match the sha256 in {META}; it is corrupt")
    try:
        model = build_model(meta["architecture"], **meta.get("model_kwargs", {}))
    except KeyError as e:
        raise DataError(f"checkpoint {folder}: {e.args[0]}") from None
    state = st.load(blob)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise DataError(f"checkpoint {folder}: weights do not fit architecture {meta['architecture']!r}: {e}") from None
    return model.to(device).eval(), meta
