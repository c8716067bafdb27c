"""camlens._util.lock: one writer per folder; a killed holder's lock is free again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from camlens._util.lock import LOCK_NAME, folder_lock
from camlens.errors import FolderBusyError

HOLD = """
import sys, time
from camlens._util.lock import folder_lock
with folder_lock(sys.argv[1], "camlens test-holder"):
    print("held", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_folder_and_the_holder(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(FolderBusyError) as e, folder_lock(tmp_path, "camlens train"):
            pass
        msg = str(e.value)
        assert str(tmp_path) in msg and f"process {proc.pid}" in msg and "camlens test-holder" in msg
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file stays, the lock does not
    with folder_lock(tmp_path, "camlens train") as folder:
        assert folder == tmp_path


def test_the_lock_is_released_after_the_block_and_after_an_error(tmp_path):
    with pytest.raises(RuntimeError), folder_lock(tmp_path, "a"):
        raise RuntimeError("boom")
    start = time.monotonic()
    with folder_lock(tmp_path, "b"):
        pass
    assert time.monotonic() - start < 1.0


def test_one_process_cannot_take_its_own_folder_twice(tmp_path):
    with folder_lock(tmp_path, "outer"), pytest.raises(FolderBusyError), folder_lock(tmp_path, "inner"):
        pass
