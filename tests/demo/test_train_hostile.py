"""`camlens train` against full disks, read-only or busy folders, a user's files and out-of-range flags."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time

import pytest

import camlens._util.files
from camlens._util.lock import LOCK_NAME, folder_lock
from camlens.cli import main
from camlens.demo import train as train_module
from camlens.demo.checkpoint import load_checkpoint, read_meta
from camlens.demo.train import train
from camlens.errors import CamlensError, InputError

QUICK = dict(train_limit=64, val_limit=64, epochs=1, progress=False, log=None, device="cpu")
CLI_QUICK = ["--epochs", "1", "--train-limit", "64", "--val-limit", "64", "--device", "cpu", "--no-progress"]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if training starts loading data (the checks must come first)."""
    monkeypatch.setattr(train_module, "_splits", lambda *a, **k: pytest.fail("work started before the check"))


@pytest.mark.parametrize("seed", [2**70, 2**64, -(2**63) - 1])
def test_out_of_range_seed_is_an_input_error_naming_the_flag_and_range(seed, no_work, capsys, tmp_path):
    with pytest.raises(InputError, match=rf"seed={seed} \(--seed\) is out of range: a seed is an int from -2\*\*63"):
        train(seed=seed, **QUICK)
    for command in ("train", "demo"):
        assert main([command, "--out", str(tmp_path / command), *CLI_QUICK, "--seed", str(seed)]) == 1
        err = capsys.readouterr().err
        assert f"InputError: seed={seed} (--seed) is out of range" in err
        assert "(-9223372036854775808 to 18446744073709551615)" in err
        assert not (tmp_path / command).exists()  # checked before anything was made


def test_out_that_is_a_file_fails_before_training(tmp_path, no_work, capsys):
    a_file = tmp_path / "ckpt"
    a_file.write_text("mine")
    assert main(["train", "--out", str(a_file), *CLI_QUICK]) == 1
    err = capsys.readouterr().err
    assert f"InputError: the checkpoint folder (--out) {a_file} is an existing file, not a folder" in err
    assert a_file.read_text() == "mine"


def test_an_unwritable_out_fails_before_training(tmp_path, no_work, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(camlens._util.files.tempfile, "mkstemp", refused)  # the tests run as root, which ignores chmod
    with pytest.raises(InputError, match=r"checkpoint folder \(--out\) .* cannot be written \(Permission denied\)"):
        train(checkpoint=tmp_path / "ro", **QUICK)


HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys, time
    from pathlib import Path

    # camlens._util.lock's protocol, without importing camlens (and torch): flock on FOLDER/.camlens.lock
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".camlens.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "what": "camlens train", "since": "now"}
    os.write(fd, json.dumps(info).encode())
    Path(sys.argv[2]).touch()
    time.sleep(60)
    """
)


def test_a_second_training_into_a_busy_folder_fails_at_once(tmp_path, no_work, capsys):
    ckpt, ready = tmp_path / "ckpt", tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ckpt), str(ready)])
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the lock holder did not start"
            time.sleep(0.02)
        assert main(["train", "--out", str(ckpt), *CLI_QUICK]) == 1
        err = capsys.readouterr().err
        assert f"FolderBusyError: {ckpt} is being written by process {holder.pid} on" in err
        assert "(camlens train, since" in err and "choose another output folder" in err
        assert sorted(p.name for p in ckpt.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.kill()
        holder.wait(10)
    with folder_lock(ckpt, "camlens train"):  # the killed holder's lock is free again
        pass


def test_train_keeps_a_users_weights_file(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "weights-best.safetensors").write_bytes(b"my best run")
    train(seed=0, checkpoint=ckpt, **QUICK)
    first = read_meta(ckpt)["weights"]
    train(seed=2**64 - 1, checkpoint=ckpt, **QUICK)  # the largest seed is in range
    assert read_meta(ckpt)["recipe"]["seed"] == 2**64 - 1
    names = sorted(p.name for p in ckpt.iterdir() if p.name != LOCK_NAME)
    assert names == sorted(["meta.json", read_meta(ckpt)["weights"], "weights-best.safetensors"])
    assert first not in names and (ckpt / "weights-best.safetensors").read_bytes() == b"my best run"


def test_a_full_disk_in_epoch_two_keeps_epoch_one(tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    calls, real_fsync = [0], os.fsync

    def fsync(fd):
        calls[0] += 1
        if calls[0] > 2:  # epoch 1's save (weights, meta.json) goes through; epoch 2's does not
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(CamlensError) as info:
        train(seed=0, checkpoint=ckpt, **{**QUICK, "epochs": 2})
    first = read_meta(ckpt)["weights"]
    assert str(info.value).startswith(f"could not write the checkpoint in {ckpt}: No space left on device (ENOSPC)")
    assert f"the previous checkpoint (epoch 1, {first}) is intact" in str(info.value)
    monkeypatch.undo()
    assert load_checkpoint(ckpt)[1]["epochs"] == 1
    assert sorted(p.name for p in ckpt.iterdir() if p.name != LOCK_NAME) == sorted(["meta.json", first])
