"""Keep freed CPU memory in the process for reuse (glibc's malloc), instead of handing it back to the kernel.

camlens' perturbation loops (Score-CAM's masked passes, the metrics' deletion,
insertion and ROAD passes) run the same model on batches of the same size
thousands of times, so they allocate and free the same large activations over
and over. With glibc's default settings a block of more than 128 KiB (or, once
one has been freed, of more than its size, up to 32 MiB) is a fresh ``mmap``,
and a large free block at the top of the heap is given back: every new batch
then touches fresh pages the kernel must fault in and zero. On the tutorial
ConvNet at a batch of 164 that zeroing took a third of the forward time
(0.48 ms per image with glibc's defaults, 0.34 ms with freed memory kept;
``benchmarks/bench_allocator.py``).

:func:`keep_freed_memory` sets both of glibc's thresholds (``M_MMAP_THRESHOLD``
to its maximum of 32 MiB, ``M_TRIM_THRESHOLD`` to 2 GiB less a byte): blocks
up to 32 MiB come from the heap, and freed memory stays mapped for the next
batch. The price is that the process' resident memory does not shrink after
a peak (it is reused, not leaked). The setting is the process' own, so the
library never makes it by itself: the ``camlens`` command calls it at start,
and a Python user calls it once (``camlens.keep_freed_memory()``) where that
price is welcome. On a C library other than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems (a larger value is refused)
TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt's int takes


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to 32 MiB from the heap and to keep freed memory mapped.

    Returns:
        True where both settings took effect (Linux with glibc); False elsewhere, where nothing changed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
