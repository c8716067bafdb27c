"""Checkpoint folders an attacker or an unlucky user made: nothing read outside, nothing lost, one DataError."""

from __future__ import annotations

import errno
import json
import os
import struct

import pytest
import safetensors.torch
import torch

import camlens._util.files
from camlens._util.files import sha256_bytes
from camlens._util.lock import LOCK_NAME, folder_lock
from camlens.demo import checkpoint as ck
from camlens.demo.checkpoint import load_checkpoint, prepare_output_folder, read_meta, save_checkpoint
from camlens.demo.models import ConvNet
from camlens.demo.sources import checkpoint_folder
from camlens.errors import CamlensError, DataError, FolderBusyError, InputError


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "ck"
    save_checkpoint(folder, ConvNet(), {"architecture": "convnet", "epochs": 1})
    return folder


def _meta(folder):
    return json.loads((folder / "meta.json").read_text())


def _edit(folder, **fields):
    meta = {**_meta(folder), **fields}
    (folder / "meta.json").write_text(json.dumps(meta))


def _files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME)


# --- what a save deletes -------------------------------------------------------------------------


def test_a_save_keeps_the_users_files_and_removes_only_the_checkpoint_it_replaces(saved):
    first = _meta(saved)["weights"]
    user = {
        "weights-best.safetensors": (saved / first).read_bytes(),  # a user's copy of a good checkpoint
        "weights-0123456789abcdef.safetensors": b"our name, not our bytes",
        "weights-.safetensors": b"x",
        "notes.txt": b"mine",
        ".meta.json.tmp": b"not atomic_writer's name",
    }
    for name, data in user.items():
        (saved / name).write_bytes(data)
    (saved / "weights-fedcba9876543210.safetensors").symlink_to(saved / "notes.txt")  # a link: never ours
    save_checkpoint(saved, ConvNet(num_classes=10), {"architecture": "convnet", "epochs": 2})
    second = _meta(saved)["weights"]
    assert first != second and not (saved / first).exists()  # the replaced checkpoint's weights are gone
    expected = sorted([*user, "weights-fedcba9876543210.safetensors", "meta.json", second])
    assert _files(saved) == expected
    assert all((saved / n).read_bytes() == d for n, d in user.items())
    load_checkpoint(saved)


def test_a_save_never_follows_meta_json_out_of_the_folder(tmp_path, saved):
    victim = tmp_path / "weights-0000000000000000.safetensors"
    victim.write_bytes(b"keep me")
    _edit(saved, weights="../weights-0000000000000000.safetensors")  # a hostile previous meta.json
    save_checkpoint(saved, ConvNet(), {"architecture": "convnet"})
    assert victim.read_bytes() == b"keep me"


# --- one writer per folder -----------------------------------------------------------------------


def test_a_second_writer_gets_folder_busy_and_the_first_checkpoint_stays(saved):
    before = _files(saved)
    with folder_lock(saved, "camlens train"), pytest.raises(FolderBusyError) as info:
        save_checkpoint(saved, ConvNet(), {"architecture": "convnet"})
    assert str(saved) in str(info.value) and f"process {os.getpid()}" in str(info.value)
    assert "camlens train" in str(info.value)
    assert _files(saved) == before
    load_checkpoint(saved)


# --- the weights field as a path -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, match",
    [
        ("../outside.safetensors", "is not a file name inside the checkpoint folder"),
        ("/etc/passwd", "is not a file name inside the checkpoint folder"),
        ("sub/w.safetensors", "is not a file name inside the checkpoint folder"),
        ("..", "is not a file name inside the checkpoint folder"),
        ("", "is not a file name inside the checkpoint folder"),
        ("a\0b", "is not a file name inside the checkpoint folder"),
        ("link.safetensors", "is a symbolic link, not a regular file"),
        ("fifo", "is a FIFO, not a regular file"),
        ("dir", "is a folder, not a regular file"),
        ("zero", "is a symbolic link, not a regular file"),
    ],
)
def test_weights_must_be_a_regular_file_beside_meta_json(tmp_path, saved, value, match):
    real = _meta(saved)["weights"]
    (tmp_path / "outside.safetensors").write_bytes((saved / real).read_bytes())
    (saved / "link.safetensors").symlink_to(tmp_path / "outside.safetensors")
    os.mkfifo(saved / "fifo")  # opening it must not hang
    (saved / "dir").mkdir()
    (saved / "zero").symlink_to("/dev/zero")
    _edit(saved, weights=value)
    with pytest.raises(DataError, match=match) as info:
        load_checkpoint(saved)
    assert f"checkpoint {saved}: meta.json field 'weights' = {value!r}" in str(info.value)
    with pytest.raises(DataError, match=match):  # the loader every command uses
        checkpoint_folder(saved, torch.device("cpu"))


def test_weights_over_the_size_bound_are_not_read(saved, monkeypatch):
    monkeypatch.setattr(ck, "MAX_WEIGHTS_BYTES", 1000)
    name = _meta(saved)["weights"]
    size = (saved / name).stat().st_size
    with pytest.raises(DataError, match=rf"field 'weights' = '{name}' is {size} bytes, over the 1000-byte bound"):
        load_checkpoint(saved)


def test_meta_json_must_be_a_bounded_regular_file(tmp_path, saved, monkeypatch):
    (saved / "meta.json").unlink()
    os.mkfifo(saved / "meta.json")
    with pytest.raises(DataError, match=f"checkpoint {saved}: meta.json is a FIFO, not a regular file"):
        checkpoint_folder(saved, torch.device("cpu"))
    (saved / "meta.json").unlink()
    (saved / "meta.json").symlink_to("/dev/zero")
    with pytest.raises(DataError, match=r"meta\.json is a symbolic link, not a regular file"):
        read_meta(saved)
    (saved / "meta.json").unlink()
    (saved / "meta.json").write_text(json.dumps({"format": ck.FORMAT, "pad": "x" * 2000}))
    monkeypatch.setattr(ck, "MAX_META_BYTES", 1000)
    with pytest.raises(DataError, match=r"meta.json is \d+ bytes, over the 1000-byte bound"):
        read_meta(saved)


# --- malformed fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"architecture": 5}, "field 'architecture' = 5 is not a str"),
        ({"architecture": "vgg"}, "field 'architecture' = 'vgg' is not registered; registered models: convnet"),
        ({"model_kwargs": [1]}, r"field 'model_kwargs' = \[1\] is not an object of numbers"),
        ({"model_kwargs": {"a": {"b": 1}}}, "field 'model_kwargs' = .* is not an object of numbers"),
        ({"model_kwargs": {"bogus": 1}}, r"'model_kwargs' has \['bogus'\], which 'convnet' does not take; it takes"),
        ({"model_kwargs": {"num_classes": "x"}}, "'model_kwargs' = {'num_classes': 'x'} does not build 'convnet'"),
        ({"model_kwargs": {"image_size": 2**70}}, "does not build 'convnet'|weights do not fit architecture"),
        ({"model_kwargs": {"image_size": 10_000}}, r"weights do not fit architecture 'convnet': other shape .*seq.7"),
        ({"classes": "abc"}, "field 'classes' = 'abc' is not a list of str"),
        ({"classes": [1, 2]}, r"field 'classes' = \[1, 2\] is not a list of str"),
        ({"sha256": "xyz"}, "field 'sha256' = 'xyz' is not 64 lowercase hex digits"),
        ({"weights": 5}, "field 'weights' = 5 is not a str"),
        ({"weights": None}, "field 'weights' = None is not a str"),
        ({"epochs": "1"}, "field 'epochs' = '1' is not an int"),
        ({"input_shape": [1, -28, 28]}, r"field 'input_shape' = \[1, -28, 28\] is not a list of 1 to 4 positive"),
        ({"history": [{"epoch": "1<script>"}]}, "field 'history' = .* is not a list of {epoch: int"),
    ],
)
def test_malformed_fields_are_a_data_error_naming_the_field(saved, fields, match):
    _edit(saved, **fields)
    with pytest.raises(DataError, match=match) as info:
        load_checkpoint(saved)
    assert str(saved) in str(info.value)


@pytest.mark.parametrize(
    "text, match",
    [
        ("[1, 2]", "holds a JSON list, not an object"),
        (b"\xff\xfe{", "is not valid JSON"),
        ("[" * 100_000, "is not valid JSON"),
        ('{"format": "camlens-checkpoint/1"}', "meta.json has no 'architecture' field"),
        ('{"format": 7}', "has format 7, expected 'camlens-checkpoint/1'"),
    ],
)
def test_malformed_meta_json(saved, text, match):
    path = saved / "meta.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DataError, match=match):
        read_meta(saved)


# --- safetensors headers that lie ----------------------------------------------------------------


def _header(tensors):
    return json.dumps(tensors).encode()


def _put_weights(folder, blob):
    name = _meta(folder)["weights"]
    (folder / name).write_bytes(blob)
    _edit(folder, sha256=sha256_bytes(blob))  # the same hand writes both: the sha256 proves nothing
    return name


def _valid_blob():
    return safetensors.torch.save({k: v.contiguous() for k, v in ConvNet().state_dict().items()})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda b: b[:5], "is 5 bytes, too short for a safetensors file"),
        (lambda b: struct.pack("<Q", 2**63) + b[8:], r"its header claims 9223372036854775808 bytes, but the file"),
        (lambda b: struct.pack("<Q", 4) + b"nope" + b[12:], "its header is not valid JSON"),
        (lambda b: struct.pack("<Q", 2) + b"[]", "its header is not a JSON object"),
        (
            lambda b: (
                (lambda h: struct.pack("<Q", len(h)) + h)(
                    _header({"x": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4]}})
                )
                + b"\0" * 4
            ),
            r"tensor 'x''s offsets \[0, 4\] do not match its shape \[1000000, 1000000\] .*the header lies",
        ),
        (
            lambda b: (
                (lambda h: struct.pack("<Q", len(h)) + h)(
                    _header({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})
                )
                + b"\0" * 4
            ),
            r"offsets \[0, 8\] do not match .* in a 4-byte body",
        ),
        (
            lambda b: (
                (lambda h: struct.pack("<Q", len(h)) + h)(
                    _header({"x": {"dtype": "Q99", "shape": [1], "data_offsets": [0, 4]}})
                )
                + b"\0" * 4
            ),
            "tensor 'x' has a malformed header entry",
        ),
        (
            lambda b: (
                (lambda h: struct.pack("<Q", len(h)) + h)(
                    _header({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})
                )
                + b"\0" * 40
            ),
            "the header describes 4 bytes of tensors but the body holds 40",
        ),
        (lambda b: b[:-7], r"offsets .* do not match|the header describes"),  # truncated body
        (
            lambda b: safetensors.torch.save({"seq.0.weight": torch.zeros(1)}),
            r"weights do not fit architecture 'convnet': missing: .*unexpected|weights do not fit",
        ),
    ],
)
def test_safetensors_headers_that_lie_are_a_data_error(saved, make, match):
    name = _put_weights(saved, make(_valid_blob()))
    with pytest.raises(DataError, match=match) as info:
        load_checkpoint(saved)
    assert f"checkpoint {saved}" in str(info.value) and (name in str(info.value) or "architecture" in str(info.value))


def test_weights_of_another_architecture_are_refused_before_the_body_is_read(saved, monkeypatch):
    _put_weights(
        saved, safetensors.torch.save({k: v.contiguous() for k, v in ConvNet(num_classes=3).state_dict().items()})
    )
    monkeypatch.setattr(ck, "_safetensors", lambda: pytest.fail("the body was parsed"))
    with pytest.raises(
        DataError, match=r"weights do not fit architecture 'convnet': other shape or dtype: \['seq.7.bias'"
    ):
        load_checkpoint(saved)


# --- writable output folders, full disks ---------------------------------------------------------


def test_an_output_folder_that_is_a_file_or_unwritable_fails_before_any_work(tmp_path, monkeypatch):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(InputError, match=f"the checkpoint folder {a_file} is an existing file, not a folder"):
        save_checkpoint(a_file, ConvNet(), {"architecture": "convnet"})
    with pytest.raises(InputError, match=f"--out {a_file / 'sub'} cannot be written"):
        prepare_output_folder(a_file / "sub", "--out")

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    # root ignores chmod: simulate a read-only folder
    monkeypatch.setattr(camlens._util.files.tempfile, "mkstemp", refused)
    with pytest.raises(InputError, match=rf"--out {tmp_path} cannot be written \(Permission denied\); choose"):
        prepare_output_folder(tmp_path, "--out")


@pytest.mark.parametrize("failing_call", [1, 2])  # 1: writing the weights, 2: writing meta.json (the commit)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failed_write_keeps_the_old_checkpoint_and_says_so(saved, monkeypatch, failing_call, code):
    before = {n: (saved / n).read_bytes() for n in _files(saved)}
    old = _meta(saved)["weights"]
    calls, real_fsync = [0], os.fsync

    def fsync(fd):
        calls[0] += 1
        if calls[0] == failing_call:
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CamlensError) as info:
        save_checkpoint(saved, ConvNet(num_classes=10), {"architecture": "convnet", "epochs": 2})
    message = str(info.value)
    assert f"could not write the checkpoint in {saved}: {os.strerror(code)} ({errno.errorcode[code]})" in message
    assert f"the previous checkpoint (epoch 1, {old}) is intact" in message
    monkeypatch.undo()
    assert {n: (saved / n).read_bytes() for n in _files(saved)} == before  # nothing half-written, nothing lost
    assert load_checkpoint(saved)[1]["epochs"] == 1


def test_a_failed_first_write_says_nothing_was_kept(tmp_path, monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CamlensError, match="nothing was written: there was no checkpoint in it before"):
        save_checkpoint(tmp_path / "new", ConvNet(), {"architecture": "convnet"})
    assert _files(tmp_path / "new") == []


# --- mutated checkpoints: only DataError comes out -----------------------------------------------


def _mutate(rng, blob: bytes) -> bytes:
    data = bytearray(blob)
    kind = rng.randrange(4)
    if kind == 0 and data:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # truncate
        del data[rng.randrange(len(data) + 1) :]
    elif kind == 2 and len(data) >= 8:  # a header length that lies
        data[:8] = struct.pack("<Q", rng.choice([0, 1, 7, len(data), 2**32, 2**63, rng.randrange(len(data))]))
    else:  # splice random bytes
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(data)


def test_mutated_weights_and_meta_json_only_raise_data_error(saved):
    """Seeded mutations (deterministic, about 1 s): bit flips, truncations, lying lengths, spliced bytes."""
    import random

    rng = random.Random(0)
    name = _meta(saved)["weights"]
    good_weights, good_meta = (saved / name).read_bytes(), (saved / "meta.json").read_bytes()
    outcomes = {"ok": 0, "DataError": 0}
    for i in range(150):
        weights, meta = good_weights, good_meta
        if i % 2:
            weights = _mutate(rng, good_weights)
        else:
            meta = _mutate(rng, good_meta)
        (saved / name).write_bytes(weights)
        (saved / "meta.json").write_bytes(meta)
        try:
            load_checkpoint(saved)
            outcomes["ok"] += 1
        except DataError:
            outcomes["DataError"] += 1
    assert outcomes["DataError"] > 100  # the mutations were mostly caught, and nothing else was raised
