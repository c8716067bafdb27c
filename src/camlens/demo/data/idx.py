"""Read IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or not.

Format: two zero bytes, a type code, the number of dimensions, then one
big-endian uint32 per dimension, then the data in C order.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from camlens.errors import DataError

__all__ = ["read_idx"]

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise DataError(f"IDX file {path} is a truncated or corrupt gzip file ({e}); download it again") from None
    return raw


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file into a numpy array of its own shape and type.

    Args:
        path: the file, ``.gz`` or plain (detected from its first bytes).
        expected_ndim: if given, the number of dimensions the file must have
            (3 for images, 1 for labels).

    Raises:
        DataError: the file is missing, truncated or corrupt; the message names
            the file and what was wrong.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"IDX file {path} is {len(data)} bytes long, too short for an IDX header")
    if data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(
            f"IDX file {path} has magic bytes {data[:4].hex()}, not an IDX header "
            "(00 00 <type 08..0e> <ndim>); is it the right file?"
        )
    dtype, ndim = _DTYPES[data[2]], data[3]
    if expected_ndim is not None and ndim != expected_ndim:
        raise DataError(f"IDX file {path} has {ndim} dimension(s), expected {expected_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(data)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    got = len(data) - header
    if got != expected:
        raise DataError(
            f"IDX file {path} holds {got} data bytes but its header {dims} says {expected}: "
            f"the file is {'truncated' if got < expected else 'longer than its header says'}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))
