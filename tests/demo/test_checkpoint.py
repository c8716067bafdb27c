"""Checkpoint folders: round trip, permissions, stale weights, corruption and mismatch errors."""

from __future__ import annotations

import json
import os
import stat

import pytest
import safetensors.torch
import torch

from camlens import DataError
from camlens._util.files import sha256_bytes
from camlens._util.lock import LOCK_NAME
from camlens.demo.checkpoint import load_checkpoint, save_checkpoint
from camlens.demo.models import ConvNet


def test_round_trip_and_plain_permissions(tmp_path):
    model = ConvNet()
    save_checkpoint(tmp_path / "ck", model, {"architecture": "convnet", "classes": ["a"]})
    loaded, meta = load_checkpoint(tmp_path / "ck")
    assert meta["classes"] == ["a"] and not loaded.training
    pairs = zip(model.state_dict().values(), loaded.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    mask = os.umask(0)
    os.umask(mask)
    for f in (tmp_path / "ck").iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f.name


def test_stale_weights_from_a_killed_save_are_removed(tmp_path):
    folder = tmp_path / "ck"
    save_checkpoint(folder, ConvNet(), {"architecture": "convnet"})
    # what a save killed before its commit point leaves: weights named by their own sha256, and temporary files
    blob = safetensors.torch.save({"w": torch.ones(3)})
    (folder / f"weights-{sha256_bytes(blob)[:16]}.safetensors").write_bytes(blob)
    (folder / ".meta.json.ab_cd123.tmp").write_text("{")
    (folder / ".weights-0123456789abcdef.safetensors.x1y2z3w4.tmp").write_bytes(b"half")
    save_checkpoint(folder, ConvNet(), {"architecture": "convnet"})
    meta = json.loads((folder / "meta.json").read_text())
    assert sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME) == sorted(["meta.json", meta["weights"]])


def test_corrupt_missing_and_mismatched(tmp_path):
    folder = tmp_path / "ck"
    save_checkpoint(folder, ConvNet(), {"architecture": "convnet"})
    meta = json.loads((folder / "meta.json").read_text())
    weights = folder / meta["weights"]
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="does not match the sha256"):
        load_checkpoint(folder)
    weights.unlink()
    with pytest.raises(DataError, match="is missing"):
        load_checkpoint(folder)
    save_checkpoint(folder, ConvNet(num_classes=3), {"architecture": "convnet"})  # kwargs not recorded
    with pytest.raises(DataError, match="do not fit architecture 'convnet'"):
        load_checkpoint(folder)
    with pytest.raises(DataError, match="not a camlens checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="architecture"):
        save_checkpoint(folder, ConvNet(), {})
