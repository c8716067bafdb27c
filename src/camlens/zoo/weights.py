"""Weights from files and from the zoos' caches: read safely, applied strictly, offline failures explained.

A weights file is a ``.safetensors`` file or a state dict written by
``torch.save``, read with ``torch.load(weights_only=True)``: nothing is ever
unpickled beyond tensors and plain containers.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from camlens._util.optional import optional_import
from camlens.errors import InputError

__all__ = ["apply_weights", "check_weights_arg", "head_classes", "offline_error", "reachable", "read_weights"]

#: keys under which training scripts commonly nest the state dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module")


def check_weights_arg(weights: str | None) -> str | None:
    """``weights`` as given, after checking it is ``None``, ``"none"`` or an existing regular file."""
    if weights is None or weights == "none":
        return weights
    path = Path(weights)
    if not path.exists():
        raise InputError(
            f"weights={weights!r}: no such file; give a .safetensors file, a state dict saved with "
            "torch.save(model.state_dict(), FILE), or 'none' for random weights"
        )
    if not path.is_file():
        raise InputError(f"weights={weights!r} is not a regular file; give a .safetensors or state-dict file")
    return weights


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= path.stat().st_size - 8 and head[8:9] == b"{"


def _torch_state(path: Path, name: str) -> Any:
    import pickle
    import zipfile

    with path.open("rb") as f:
        first = f.read(1)
    if not zipfile.is_zipfile(path) and first != b"\x80":  # torch.save writes a zip, or (legacy) a pickle
        raise InputError(
            f"weights={name!r} is neither a .safetensors file nor a state dict written by torch.save; "
            "other formats (ONNX, Keras, TensorFlow) are refused"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = str(e).splitlines()
        why = next((ln.strip() for ln in lines if "global" in ln.lower()), "not a state dict")
        raise InputError(
            f"weights={name!r} holds Python objects other than tensors ({why}); camlens never unpickles them: "
            "save the state dict instead (torch.save(model.state_dict(), FILE)) or a .safetensors file"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise InputError(f"weights={name!r} is a damaged torch.save file ({e})") from None


def _unnest(state: Any, name: str) -> dict[str, Tensor]:
    """The ``{name: tensor}`` inside a loaded file: as saved, or under one of :data:`NESTED_KEYS`."""
    if isinstance(state, Mapping) and not all(isinstance(v, Tensor) for v in state.values()):
        for key in NESTED_KEYS:
            inner = state.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(
            f"weights={name!r} holds {type(state).__name__}, not a state dict of tensors "
            f"(alone or under one of {', '.join(repr(k) for k in NESTED_KEYS)}); save model.state_dict()"
        )
    keys = list(state)
    if all(k.startswith("module.") for k in keys):  # saved from DataParallel / DDP
        return {k.removeprefix("module."): v for k, v in state.items()}
    return {str(k): v for k, v in state.items()}


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``), on the CPU.

    A state dict nested under ``"state_dict"``, ``"model"``, ... (as training
    scripts save checkpoints) is taken from there; a ``"module."`` prefix on
    every key (DataParallel) is dropped.

    Raises:
        InputError: the file is missing, in another format, or holds anything
            but tensors (a pickled model is refused, never unpickled).
    """
    p = Path(check_weights_arg(str(path)) or "")
    if _is_safetensors(p):
        st = optional_import("safetensors.torch", "cli", "--weights .safetensors files")
        try:
            loaded = st.load_file(str(p), device="cpu")
        except Exception as e:  # safetensors' own SafetensorError derives from Exception only
            raise InputError(f"weights={str(path)!r} is a damaged .safetensors file ({e})") from None
        return _unnest(loaded, str(path))
    if p.suffix == ".safetensors":
        raise InputError(f"weights={str(path)!r} is named .safetensors but does not start with a safetensors header")
    return _unnest(_torch_state(p, str(path)), str(path))


def head_classes(model: nn.Module, state: Mapping[str, Tensor]) -> int | None:
    """The class count of a fine-tuned head in ``state``: when the only tensors whose shapes differ from
    ``model``'s differ in their first dimension alone, and all to one value N, N; else ``None``."""
    own = model.state_dict()
    if set(own) != set(state):
        return None
    sizes = {int(state[k].shape[0]) for k in own if state[k].shape != own[k].shape
             and state[k].ndim == own[k].ndim >= 1 and state[k].shape[1:] == own[k].shape[1:]}  # fmt: skip
    others = [k for k in own if state[k].shape != own[k].shape
              and not (state[k].ndim == own[k].ndim >= 1 and state[k].shape[1:] == own[k].shape[1:])]  # fmt: skip
    return sizes.pop() if len(sizes) == 1 and not others else None


def apply_weights(model: nn.Module, state: Mapping[str, Tensor], name: str, spec: str) -> nn.Module:
    """Load ``state`` into ``model`` strictly; a mismatch names the keys and shapes that differ.

    Raises:
        InputError: missing or unexpected keys, or a tensor of another shape.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("file vs model shapes", shapes)):
            if items:
                more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
                parts.append(f"{label}: {', '.join(items[:3])}{more}")
        raise InputError(
            f"weights={name!r} do not fit model={spec!r}: {'; '.join(parts)}. Give the weights of this "
            "architecture (a fine-tuned head needs a factory 'file.py:build' that builds it with that many classes)"
        )
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    return model


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds (no request is sent).

    Behind a proxy (``HTTPS_PROXY``, ``ALL_PROXY``, ...) the host is not dialled
    directly, so the answer is ``True``: the download itself then decides.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                                       "all_proxy")):  # fmt: skip
        return True
    u = urlparse(url)
    host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_error(spec: str, what: str, where: str, reason: object) -> InputError:
    """The error for pretrained weights that are neither cached nor downloadable."""
    return InputError(
        f"model={spec!r}: the pretrained weights ({what}) are not in the local cache ({where}) and could not be "
        f"downloaded ({reason}); this machine looks offline. Pass --weights none for random weights, or "
        "--weights FILE with a .safetensors or state-dict file (in Python: load_model(spec, device, weights='none'))"
    )
