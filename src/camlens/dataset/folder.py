"""The results folder as a boundary: what is read stays inside it, what is written fails with a clear error.

Every file a manifest or shard record names is resolved inside the folder and
must be a regular file (no FIFO that hangs, no ``/dev/zero``, no link out of the
folder); its size is checked before a byte is read, and the read is bounded.
Writes that fail (disk full, a read-only folder) become a :class:`DataError`
that says what was kept: finished shards stay valid and a rerun resumes.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from camlens._util.files import WRITE_ERROR_WHY, errno_name
from camlens.errors import DataError

__all__ = ["SizeMismatch", "check_writable", "read_inside", "sweep_temporaries", "write_failed"]

_PROBE = "camlens-write-probe"
#: ``tempfile.mkstemp``'s names as :func:`camlens._util.files.atomic_writer` makes them: ``.NAME.XXXXXXXX.tmp``
_TEMPORARY = re.compile(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp")


def read_inside(folder: Path, name: object, what: str, *, size: int | None = None, max_bytes: int) -> bytes:
    """The bytes of ``folder/name``, a regular file inside ``folder`` of ``size`` bytes (if given), read bounded.

    Args:
        folder: the results folder.
        name: the file name as the record gives it.
        what: the record and field naming it, for the error (``"manifest.json shards[2].file"``).
        size: the size the record promises; checked before reading.
        max_bytes: the most this file may hold.

    Raises:
        DataError: the name is not a string, leads outside ``folder``, is not a
            regular file, or its size is not the promised one; FileNotFoundError
            when it does not exist (callers say what to do).
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DataError(f"{what} in {folder} is {name!r}; expected the name of a file inside the folder")
    root = folder.resolve()
    path = (root / name).resolve()
    if not path.is_relative_to(root) or path == root:
        raise DataError(
            f"{what} in {folder} is {name!r}, which leads outside the folder ({path}); "
            "a results folder only names its own files: the manifest or record has been altered"
        )
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # FileNotFoundError passes on
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{what} in {folder} is {name!r}, which is not a regular file; it cannot be results")
        limit = max_bytes if size is None else size
        if info.st_size > max_bytes or (size is not None and info.st_size != size):
            expected = f"the record says {size}" if size is not None else f"at most {max_bytes} are expected"
            raise SizeMismatch(f"{path} is {info.st_size} bytes where {expected}", f"it is {info.st_size} bytes "
                               f"where {expected}")  # fmt: skip
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise SizeMismatch(f"{path} grew while it was read (more than {limit} bytes)", "it grew while it was read")
    return data


class SizeMismatch(DataError):
    """The file's size is not the one its record promises (truncated, extended or replaced).

    ``args[1]`` says how, without the path (``"it is 4728 bytes where the record says 3728"``).
    """

    def __str__(self) -> str:
        return str(self.args[0])


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and prove it writable with a probe file, before any work starts.

    Raises:
        DataError: ``folder`` is a file, or cannot be created or written; the message says why.
    """
    if folder.exists() and not folder.is_dir():
        raise DataError(f"out={str(folder)!r} is a file, not a folder; choose a folder for the results")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{_PROBE}.{os.getpid():08d}.tmp"
        with open(probe, "wb") as f:
            f.write(b"camlens")
        probe.unlink(missing_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot write to the output folder {folder}: {e.strerror or e} ({errno_name(e)}); "
            "nothing was computed: choose a writable folder, or free space or fix its permissions"
        ) from None


def write_failed(e: OSError, path: Path, folder: Path) -> DataError:
    """The error for a write to ``path`` that failed: why, what was kept, how to resume."""
    kept = len(list(folder.glob("shard-*.json")))
    why = WRITE_ERROR_WHY.get(e.errno or 0, "")
    return DataError(
        f"cannot write {path.name} in {folder}: {why or e.strerror or e} ({errno_name(e)}); "
        "nothing half-written is kept: "
        f"the {kept} finished shard(s) there stay valid, and rerunning the same command resumes from them "
        "once there is space / permission"
    )


def sweep_temporaries(folder: Path, names: set[str]) -> int:
    """Remove the temporary files our atomic writes of ``names`` left when killed; return how many.

    Only files of our own pattern (``.NAME.XXXXXXXX.tmp``, as ``tempfile.mkstemp`` makes them) and
    write probes are removed; call it only while holding the folder's lock, so no live run owns them.
    """
    n = 0
    for path in folder.iterdir():
        m = _TEMPORARY.fullmatch(path.name)
        if m and (m.group(1) in names or m.group(1) == _PROBE) and path.is_file():
            path.unlink(missing_ok=True)
            n += 1
    return n
