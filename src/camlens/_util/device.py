"""The one device rule: ``auto`` is CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from camlens.errors import InputError

__all__ = ["DEVICE_HELP", "select_device"]

DEVICE_HELP = "device: auto (CUDA, then MPS, then CPU; the default), cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(device: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA if available, else Apple MPS, else CPU; any other value is checked.

    Args:
        device: ``"auto"``, ``None``, a device string or a ``torch.device``.
        local_rank: under ``torchrun``, the process's local rank: a bare ``cuda``
            becomes ``cuda:<local_rank>`` and is made the current CUDA device.

    Raises:
        InputError: an unknown or unavailable device.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif _mps_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    elif isinstance(device, torch.device):
        dev = device
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(
                f"device={device!r} is not a device; use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'"
            ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={str(device)!r} but CUDA is not available here; use device='auto' or 'cpu'")
    if dev.type == "mps" and not _mps_available():
        raise InputError(f"device={str(device)!r} but Apple MPS is not available here; use device='auto' or 'cpu'")
    if dev.type == "cuda" and local_rank is not None:
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev
