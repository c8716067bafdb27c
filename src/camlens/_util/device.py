"""The one device rule: ``auto`` is CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from camlens.errors import InputError

__all__ = ["DEVICE_HELP", "select_device"]

DEVICE_HELP = "device: auto (CUDA, then MPS, then CPU; the default), cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _check_available(dev: torch.device, given: object) -> None:
    """Refuse a device that holds no data (meta) or that this machine does not have."""
    if dev.type == "meta":
        raise InputError(
            f"device={str(given)!r}: the meta device holds shapes but no data, so nothing can be computed "
            "there; use device='auto', 'cpu' or 'cuda'"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={str(given)!r} but CUDA is not available here; use device='auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(
            f"device={str(given)!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them or device='cuda'"
        )
    if dev.type == "mps" and not _mps_available():
        raise InputError(f"device={str(given)!r} but Apple MPS is not available here; use device='auto' or 'cpu'")
    if dev.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, dev.type, None)
        is_available = getattr(backend, "is_available", None)
        if not (callable(is_available) and is_available()):
            raise InputError(
                f"device={str(given)!r}: no {dev.type!r} device is available here; "
                "use 'auto', 'cpu', 'cuda', 'cuda:1' or 'mps'"
            )


def select_device(device: str | torch.device | None = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA if available, else Apple MPS, else CPU; any other value is checked.

    Args:
        device: ``"auto"``, ``None``, a device string or a ``torch.device``.
        local_rank: under ``torchrun``, the process's local rank: a bare ``cuda``
            becomes ``cuda:<local_rank>`` and is made the current CUDA device.

    Raises:
        InputError: an unknown or unavailable device, or ``meta`` (which holds no data).
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
    _check_available(dev, device)
    if dev.type == "cuda" and local_rank is not None:
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    return dev
