"""Running independent pieces of CPU work side by side, one torch thread each.

Small convolutions scale poorly across threads: on the 2-core development
machine, the benchmark ResNet's forward passes at 64x64 take 0.80-0.86 ms a
row as two chunks at a time with one thread each, against 0.85-1.04 ms a row
one chunk at a time with two threads (``benchmarks/bench_methods.py``'s model,
256-row chunks, 4 interleaved rounds). :func:`ordered_map` runs such chunks
in a small pool of Python threads (torch releases the GIL inside its ops)
each holding torch's intra-op thread count at 1.

torch's intra-op thread count belongs to each thread (OpenMP's per-thread
setting), but :func:`torch.set_num_threads` also sets process-wide values:
the count new threads start with, and MKL's. The workers set their own
count to 1 when they start; when the map ends, the calling thread sets its
own count again, which puts the process-wide values back to it. Other
threads' counts are never touched; while a map runs, a thread started
elsewhere starts with 1, and a second map in another thread may put MKL's
count back before the first map ends (its workers then use more threads
for their matrix products: the same values up to float rounding).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def _one_thread() -> None:
    torch.set_num_threads(1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``fn`` over ``items`` on ``workers`` new threads (one torch thread each), results in the items' order.

    At most ``workers`` items are in flight, so at most that many results
    are held at once. With ``workers <= 1`` this is plain ``map`` in the
    calling thread, torch's thread count untouched. An exception in ``fn``
    is raised here, after the items in flight finish.
    """
    if workers <= 1:
        yield from map(fn, items)
        return
    found = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="camlens", initializer=_one_thread) as pool:
            pending: deque[Future[R]] = deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(found)  # the process-wide values the workers' setting changed
