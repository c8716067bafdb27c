"""One lock per output folder: a second writer gets a clear error; a killed holder's lock is free again.

The lock is an advisory ``flock`` on ``FOLDER/.camlens.lock``, held for as
long as the ``with`` block runs. The kernel drops it when its process ends,
however it ends, so a lock left by a killed process is simply taken: there is
no stale state to guess about. The file holds the holder's pid, host, command
and start time, only so that the error can name them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from camlens.errors import FolderBusyError

__all__ = ["LOCK_NAME", "folder_lock"]

LOCK_NAME = ".camlens.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} on {info['host']} ({info['what']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold ``folder``'s lock for the ``with`` block (the folder is created if needed).

    Args:
        folder: the output folder.
        what: what holds it, for the other writer's error (``"camlens train"``).

    Raises:
        FolderBusyError: a live process holds the folder's lock; the message
            names the folder and that process.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks; run unguarded
        yield Path(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # less the umask, like a plain open()
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderBusyError(
                f"{folder} is being written by {_holder(path)}; wait for it to finish or choose another output folder"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
                "since": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": sys.argv[:8]}  # fmt: skip
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(info).encode())
        yield folder
    finally:
        os.close(fd)  # releases the lock; the file stays, harmless and reused
