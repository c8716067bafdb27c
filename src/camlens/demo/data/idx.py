"""Read IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or not.

Format: two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order.

Reading is bounded: the header is read (and checked) first, then exactly the
number of data bytes it implies, streamed out of the gzip stream in chunks, and
never more than :data:`MAX_BYTES`; a gzip bomb or a header that lies is a
:class:`~camlens.errors.DataError`, found as soon as the data runs past the
header's size.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, cast

import numpy as np

from camlens.errors import DataError

__all__ = ["MAX_BYTES", "read_idx"]

#: the largest data size an IDX file may declare (Fashion-MNIST's largest is 47 MB).
MAX_BYTES = 1 << 30

_CHUNK = 1 << 20

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@contextmanager
def _open(path: Path) -> Iterator[tuple[IO[bytes], bool]]:
    """``(stream, gzipped)``: the file's decompressed bytes, read on demand; errors become DataErrors."""
    if not path.exists():
        raise DataError(f"IDX file {path} does not exist")
    if not path.is_file():
        raise DataError(f"IDX file {path} is not a regular file; give the path of an IDX file")
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) if gzipped else raw as f:
                yield cast(IO[bytes], f), gzipped
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"IDX file {path} is a truncated or corrupt gzip file ({e}); download it again") from None
    except OSError as e:
        raise DataError(f"IDX file {path} cannot be read ({e})") from None


def _read(f: IO[bytes], n: int) -> bytearray:
    """Up to ``n`` bytes (fewer only at the end of the stream), read in chunks."""
    out = bytearray()
    while len(out) < n and (chunk := f.read(min(_CHUNK, n - len(out)))):
        out += chunk
    return out


def _header(f: IO[bytes], path: Path, expected_ndim: int | None) -> tuple[np.dtype, tuple[int, ...], int]:
    """``(dtype, dims, data bytes)`` from the header, checked before any data is read."""
    head = _read(f, 4)
    if len(head) < 4:
        raise DataError(f"IDX file {path} is {len(head)} bytes long, too short for an IDX header")
    if head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise DataError(
            f"IDX file {path} has magic bytes {head.hex()}, not an IDX header "
            "(00 00 <type 08..0e> <ndim>); is it the right file?"
        )
    dtype, ndim = _DTYPES[head[2]], head[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"IDX file {path} has {ndim} dimension(s), expected {expected_ndim}")
    raw_dims = _read(f, 4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(f"IDX file {path} is truncated inside its header ({4 + len(raw_dims)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    size = math.prod(dims) * dtype.itemsize  # Python ints: no overflow
    if size > MAX_BYTES:
        raise DataError(
            f"IDX file {path} has a header {dims} of {dtype.itemsize}-byte items, which says {size} data bytes, "
            f"more than the {MAX_BYTES}-byte limit (camlens.demo.data.idx.MAX_BYTES); is it the right file?"
        )
    return dtype, dims, size


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file into a numpy array of its own shape and type.

    Args:
        path: the file, ``.gz`` or plain (detected from its first bytes).
        expected_ndim: if given, the number of dimensions the file must have
            (3 for images, 1 for labels).

    Raises:
        DataError: the file is missing, truncated, corrupt, or declares more
            than :data:`MAX_BYTES` of data; the message names the file and what
            was wrong.
    """
    path = Path(path)
    with _open(path) as (f, gzipped):
        dtype, dims, size = _header(f, path, expected_ndim)
        header = 4 + 4 * len(dims)
        if not gzipped:  # a plain file's size is known before reading a byte of data
            got = path.stat().st_size - header
            if got != size:
                raise DataError(
                    f"IDX file {path} holds {got} data bytes but its header {dims} says {size}: "
                    f"the file is {'truncated' if got < size else 'longer than its header says'}"
                )
        data = _read(f, size)
        if len(data) < size:
            raise DataError(f"IDX file {path} holds {len(data)} data bytes but its header {dims} says {size}: "
                            "the file is truncated")
        if f.read(1):
            raise DataError(f"IDX file {path} holds more than the {size} data bytes its header {dims} says: "
                            "the file is longer than its header says")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
