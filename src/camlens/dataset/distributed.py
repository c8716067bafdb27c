"""torch.distributed for explain-dataset: set up only under a launcher with ``WORLD_SIZE > 1``.

``torchrun`` (or any launcher that sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) starts one process per rank; the process
group uses NCCL when the run is on CUDA and gloo otherwise. A process group the
caller already created is used as it is and left open.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from camlens.errors import InputError

__all__ = ["barrier", "check_same", "setup", "sum_ints", "teardown"]


def setup(device: object) -> tuple[int, int, int, bool]:
    """``(rank, world_size, local_rank, created_here)``; joins the process group when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), False
    if world <= 1:
        return 0, 1, 0, False
    if not dist.is_available():
        raise InputError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    want_cuda = str(device).startswith("cuda") or (device in (None, "auto") and torch.cuda.is_available())
    backend = "nccl" if want_cuda else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), local_rank, True


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _tensor_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        dist.barrier()


def sum_ints(values: list[int], device: object = None) -> list[int]:
    """Element-wise sum of ``values`` over the ranks."""
    if not _active():
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=_tensor_device())
    dist.all_reduce(t)
    return [int(v) for v in t.tolist()]


def check_same(digest: str, what: str, device: object = None) -> None:
    """Refuse to go on when ranks disagree on a sha256 hex digest (e.g. randomly initialised weights).

    Raises:
        InputError: on every rank, naming ``what``.
    """
    if not _active():
        return
    mine = torch.tensor(list(bytes.fromhex(digest)), dtype=torch.int64, device=_tensor_device())
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise InputError(
            f"{what} differ between ranks (sha256 {digest[:12]}... on rank {dist.get_rank()}); "
            "a model factory must return the same weights in every process: load them, or seed before building"
        )


def teardown(created_here: bool) -> None:
    """Leave the process group if this module created it."""
    if created_here and dist.is_initialized():
        dist.destroy_process_group()
