"""Files written so a kill never leaves half of one, and their digests."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from camlens.errors import CamlensError, InputError

__all__ = [
    "WRITE_ERROR_WHY",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_writer",
    "errno_name",
    "inside_data_folder",
    "prepare_output_folder",
    "sha256_bytes",
    "sha256_file",
    "writing",
]

_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(path: str | Path, suffix: str = ".tmp") -> Iterator[IO[bytes]]:
    """A binary file that becomes ``path`` only when the ``with`` block ends without an error.

    The data goes to a temporary file in the same folder, is flushed and fsynced,
    then renamed over ``path`` (the commit point). On any exception the temporary
    file is removed and ``path`` is untouched. The file gets the permissions a
    plain ``open(path, "wb")`` would give (0666 less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_writer`."""
    with atomic_writer(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_writer`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file (sha256 unless ``algorithm`` says otherwise), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def inside_data_folder(out: str | Path, data: object) -> bool:
    """Whether the output folder ``out`` is the folder ``data`` names, or inside it (a run's files would be
    read as data by the next run); ``False`` when ``data`` is not a folder (a dataset name, a ``Dataset``)."""
    return isinstance(data, (str, Path)) and Path(data).is_dir() and Path(out).resolve().is_relative_to(
        Path(data).resolve()
    )


def prepare_output_folder(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and prove now that files can be created in it (before any work).

    Args:
        folder: the output folder.
        what: how the user named it, for the message (``"the checkpoint folder (--out)"``).

    Raises:
        InputError: ``folder`` is an existing file, or cannot be created or written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{what} {folder} is an existing file, not a folder; give a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".camlens-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(
            f"{what} {folder} cannot be written ({e.strerror or e}); choose a folder you can write to"
        ) from None
    return folder


#: plain words for the errors of a write that failed for want of space or permission.
WRITE_ERROR_WHY = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is reached",
                   errno.EACCES: "permission denied", errno.EROFS: "the file system is read-only"}  # fmt: skip


def errno_name(e: OSError) -> str:
    """``"ENOSPC"`` for a full disk, ``"?"`` for an ``OSError`` without a known errno."""
    return errno.errorcode.get(e.errno or 0, "?")


@contextmanager
def writing(folder: str | Path, kept: str) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing into ``folder`` into a :class:`CamlensError` that says what was kept.

    Args:
        folder: the output folder being written.
        kept: what the user still has if a write fails, e.g. ``"the files written before it are complete"``.
    """
    try:
        yield
    except OSError as e:
        why = WRITE_ERROR_WHY.get(e.errno or 0) or e.strerror or str(e)
        name = Path(e.filename).name if e.filename else "a file"
        raise CamlensError(f"cannot write {name} in {folder}: {why}; {kept}; nothing is half-written") from None
