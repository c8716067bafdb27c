"""Checkpoints: weights in safetensors plus a JSON file, written so a kill never breaks one.

A checkpoint is a folder::

    ckpt/
      meta.json                      architecture, classes, data, epochs, accuracy,
                                     camlens version, and the weights file's name + sha256
      weights-<sha256[:16]>.safetensors

Saving takes the folder's lock (:func:`camlens._util.lock.folder_lock`: one
writer per folder), writes the new weights under a new name (the old checkpoint
stays intact), then replaces ``meta.json`` atomically (temporary file + rename:
the commit point), then removes the weights file the old ``meta.json`` named. A
process killed at any moment leaves the old checkpoint or the new one, never a
mix. A save also removes what a killed save of ours left behind, and nothing
else: a ``weights-<16 hex>.safetensors`` whose bytes hash to the name's 16 hex
digits (only :func:`save_checkpoint` writes such a file), and our temporary
files ``.weights-<16 hex>.safetensors.<8>.tmp`` / ``.meta.json.<8>.tmp`` (stale,
since the lock keeps every other writer out). A user's ``weights-best.safetensors``
is never touched.

Loading trusts nothing in ``meta.json``: every field is type-checked, the
weights file must be a regular file directly in the folder (no path, no symbolic
link, no FIFO or device), at most :data:`MAX_WEIGHTS_BYTES`, and its safetensors
header is parsed, bounded and compared with the architecture's tensors before
the body is read.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import reprlib
import stat
import struct
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from camlens._util.files import atomic_write_bytes, atomic_write_text, prepare_output_folder, sha256_bytes, sha256_file
from camlens._util.lock import folder_lock
from camlens._util.optional import optional_import
from camlens._util.version import VERSION
from camlens.errors import CamlensError, DataError

__all__ = ["MAX_WEIGHTS_BYTES", "load_checkpoint", "prepare_output_folder", "read_meta", "save_checkpoint"]

META = "meta.json"
FORMAT = "camlens-checkpoint/1"
#: the weights files :func:`save_checkpoint` writes: ``weights-<sha256[:16]>.safetensors``.
WEIGHTS_NAME = re.compile(r"weights-([0-9a-f]{16})\.safetensors")
#: the temporary files a killed :func:`save_checkpoint` can leave (``atomic_writer``'s names).
TEMP_NAME = re.compile(r"\.(?:weights-[0-9a-f]{16}\.safetensors|meta\.json)\.[a-z0-9_]{8}\.tmp")
#: the largest weights file a checkpoint may name (the demo's ConvNet needs 0.6 MB).
MAX_WEIGHTS_BYTES = 4 << 30
#: the largest ``meta.json`` read (a 5-epoch one is about 2 kB).
MAX_META_BYTES = 16 << 20
#: the largest safetensors header read (safetensors' own limit).
MAX_HEADER_BYTES = 100 << 20

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxdict = 6

#: torch dtype <-> safetensors' dtype name and item size.
_DTYPES = {torch.float64: ("F64", 8), torch.float32: ("F32", 4), torch.float16: ("F16", 2),
           torch.bfloat16: ("BF16", 2), torch.int64: ("I64", 8), torch.int32: ("I32", 4),
           torch.int16: ("I16", 2), torch.int8: ("I8", 1), torch.uint8: ("U8", 1), torch.bool: ("BOOL", 1)}  # fmt: skip
_ITEMSIZE = {name: size for name, size in _DTYPES.values()}


def _safetensors() -> Any:
    return optional_import("safetensors.torch", "cli", "checkpoints")


def save_checkpoint(path: str | Path, model: nn.Module, meta: Mapping[str, Any], *, lock: bool = True) -> Path:
    """Save ``model``'s weights and ``meta`` as the checkpoint folder ``path``.

    Args:
        path: the checkpoint folder (created if needed).
        model: the model; its ``state_dict()`` is saved (on CPU, contiguous).
        meta: JSON-serialisable facts: at least ``"architecture"`` (a name in
            :data:`camlens.demo.models.MODELS`), and typically ``"model_kwargs"``,
            ``"classes"``, ``"data"``, ``"epochs"``, ``"accuracy"``.
        lock: take the folder's lock for the save; ``False`` only when the caller
            holds ``folder_lock(path)`` already (as :func:`camlens.demo.train.train` does).

    Returns:
        The folder.

    Raises:
        InputError: ``path`` is a file or cannot be written.
        FolderBusyError: another process is writing the folder.
        CamlensError: a write failed (disk full, permission); the message says
            what was kept (the previous checkpoint, intact, if there was one).
    """
    if "architecture" not in meta:
        raise ValueError("meta must name the 'architecture' (a key of camlens.demo.models.MODELS)")
    folder = prepare_output_folder(path, "the checkpoint folder")
    with folder_lock(folder, "camlens train") if lock else nullcontext(folder):
        _save(folder, model, meta)
    return folder


def _previous(folder: Path) -> tuple[str | None, str]:
    """``(weights name the current meta.json names, or None; what a failed save keeps, in words)``."""
    if not os.path.lexists(folder / META):
        return None, "nothing was written: there was no checkpoint in it before"
    try:
        old = read_meta(folder)
    except DataError:
        return None, f"the {META} already there was left as it was"
    return old["weights"], f"the previous checkpoint (epoch {old.get('epochs', '?')}, {old['weights']}) is intact"


@contextmanager
def _write_errors(folder: Path, kept: str) -> Iterator[None]:
    """Turn a failed write (disk full, read-only, permission) into a CamlensError that says what was kept."""
    try:
        yield
    except OSError as e:
        name = errno.errorcode.get(e.errno or 0, "OSError")
        raise CamlensError(
            f"could not write the checkpoint in {folder}: {e.strerror or e} ({name}); {kept}. "
            "Free some space or fix the folder's permissions, or choose another output folder"
        ) from None


def _save(folder: Path, model: nn.Module, meta: Mapping[str, Any]) -> None:
    """Write weights, commit meta.json, then remove the replaced weights and our own leftovers (lock held)."""
    st = _safetensors()
    old_weights, kept = _previous(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    blob = st.save(tensors)
    digest = sha256_bytes(blob)
    weights_name = f"weights-{digest[:16]}.safetensors"
    full = {**meta, "format": FORMAT, "camlens_version": VERSION, "weights": weights_name, "sha256": digest}
    text = json.dumps(full, indent=2, sort_keys=True) + "\n"
    new_file = not (folder / weights_name).exists()
    with _write_errors(folder, kept):
        try:
            atomic_write_bytes(folder / weights_name, blob)
            atomic_write_text(folder / META, text)  # the commit point
        except BaseException:
            if new_file and weights_name != old_weights:  # not committed: our new weights are nobody's
                (folder / weights_name).unlink(missing_ok=True)
            raise
    for stale in _stale_files(folder, keep=weights_name, replaced=old_weights):
        with suppress(OSError):  # the new checkpoint is committed; a leftover is recognised and removed next time
            stale.unlink()


def _stale_files(folder: Path, keep: str, replaced: str | None) -> Iterator[Path]:
    """The files a save removes: the weights it replaced and our own leftovers (see the module's docstring)."""
    for p in folder.iterdir():
        if p.name == keep:
            continue
        m = WEIGHTS_NAME.fullmatch(p.name)
        if not m and not TEMP_NAME.fullmatch(p.name):
            continue
        try:
            info = p.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode):  # links, FIFOs...: never ours
            continue
        # a temporary file of ours, the weights this save replaces, or weights a killed save left
        own_hex = m.group(1) if m else None
        if (
            own_hex is None
            or p.name == replaced
            or (info.st_size <= MAX_WEIGHTS_BYTES and sha256_file(p)[:16] == own_hex)
        ):
            yield p


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


@contextmanager
def _open_inside(folder: Path, name: str, what: str, limit: int) -> Iterator[tuple[IO[bytes], int]]:
    """Open the regular file ``name`` directly in ``folder`` without following links or blocking on FIFOs.

    Yields ``(file, size)``. ``what`` names the file in messages (``"meta.json field 'weights' = 'x'"``).

    Raises:
        DataError: ``name`` is a path, a link, not a regular file, missing (FileNotFoundError's
            message is the caller's), or over ``limit`` bytes.
    """
    bad = not name or name in (".", "..") or any(c in name for c in "/\\\0")
    if bad:
        raise DataError(
            f"checkpoint {folder}: {what} is not a file name inside the checkpoint folder; it must name a file "
            "beside meta.json (no folders, '..' or absolute paths)"
        )
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(folder / name, flags)
    except FileNotFoundError:
        raise
    except OSError as e:
        kind = "a symbolic link" if e.errno == errno.ELOOP else f"unreadable ({e.strerror or e})"
        raise DataError(f"checkpoint {folder}: {what} is {kind}, not a regular file in the folder") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"checkpoint {folder}: {what} is {_kind(info.st_mode)}, not a regular file")
        raise DataError(f"checkpoint {folder}: {what} is {info.st_size} bytes, over the {limit}-byte bound")
    with os.fdopen(fd, "rb") as f:
        yield f, info.st_size


def read_meta(path: str | Path) -> dict[str, Any]:
    """The checkpoint's ``meta.json`` as a dict, checked for the format and the types of its fields.

    Raises:
        DataError: no ``meta.json``, or one that is not a regular file, not JSON,
            of another format, or with a field of the wrong type (the message
            names the folder, the field and the value).
    """
    folder = Path(path)
    try:
        with _open_inside(folder, META, META, MAX_META_BYTES) as (f, _):
            raw = f.read(MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise DataError(
            f"{folder} is not a camlens checkpoint: no {META} in it (train one with `camlens train`)"
        ) from None
    meta_path = folder / META
    try:
        meta = json.loads(raw)
    except ValueError as e:  # UnicodeDecodeError included
        raise DataError(f"{meta_path} is not valid JSON ({e})") from None
    except RecursionError:
        raise DataError(f"{meta_path} is not valid JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise DataError(
            f"{meta_path} holds a JSON {type(meta).__name__}, not an object; it is not a camlens checkpoint"
        )
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path} has format {_short.repr(meta.get('format'))}, expected {FORMAT!r}")
    _check_fields(folder, meta)
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, str)) or _is_number(v)


def _history_ok(v: Any) -> bool:
    keys = ("train_loss", "val_loss", "val_accuracy")
    return isinstance(v, list) and all(
        isinstance(h, dict) and _is_int(h.get("epoch")) and all(_is_number(h.get(k)) for k in keys) for h in v
    )


#: field -> (check, what it must be); "required" fields first.
_FIELDS: dict[str, tuple[Any, str]] = {
    "architecture": (lambda v: isinstance(v, str), "a str (a name in camlens.demo.models.MODELS)"),
    "weights": (lambda v: isinstance(v, str), "a str (the weights file's name)"),
    "sha256": (lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
               "64 lowercase hex digits"),
    "model_kwargs": (lambda v: isinstance(v, dict) and all(_is_scalar(x) for x in v.values()),
                     "an object of numbers, strings, booleans or null"),
    "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of str"),
    "input_shape": (lambda v: isinstance(v, list) and 1 <= len(v) <= 4 and all(_is_int(d) and 0 < d <= 1 << 16
                                                                               for d in v),
                    "a list of 1 to 4 positive ints"),
    "epochs": (_is_int, "an int"),
    "accuracy": (_is_number, "a finite number"),
    "per_class_accuracy": (lambda v: isinstance(v, list) and all(_is_number(a) for a in v), "a list of numbers"),
    "history": (_history_ok, "a list of {epoch: int, train_loss, val_loss, val_accuracy: numbers}"),
}  # fmt: skip
_REQUIRED = ("architecture", "weights", "sha256")


def _check_fields(folder: Path, meta: dict[str, Any]) -> None:
    for name, (ok, expected) in _FIELDS.items():
        if name not in meta:
            if name in _REQUIRED:
                raise DataError(f"checkpoint {folder}: {META} has no {name!r} field; it is not a complete checkpoint")
            continue
        if not ok(meta[name]):
            raise DataError(
                f"checkpoint {folder}: {META} field {name!r} = {_short.repr(meta[name])} is not {expected}; "
                "the checkpoint is corrupt or was edited by hand (train it again with `camlens train`)"
            )


def _build(folder: Path, meta: dict[str, Any], device: str | torch.device) -> nn.Module:
    """The recorded architecture with its ``model_kwargs``, on ``device`` (``"meta"``: shapes only, no memory)."""
    import inspect

    from camlens.demo.models import MODELS, build_model

    arch, kwargs = meta["architecture"], meta.get("model_kwargs", {})
    if arch not in MODELS:
        raise DataError(f"checkpoint {folder}: {META} field 'architecture' = {_short.repr(arch)} is not registered; "
                        f"registered models: {', '.join(sorted(MODELS))}")  # fmt: skip
    params = inspect.signature(MODELS[arch]).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            raise DataError(f"checkpoint {folder}: {META} field 'model_kwargs' has {unknown}, which {arch!r} does "
                            f"not take; it takes {sorted(params)}")  # fmt: skip
    try:
        with torch.device(device):
            return build_model(arch, **kwargs)
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as e:
        raise DataError(f"checkpoint {folder}: {META} field 'model_kwargs' = {_short.repr(kwargs)} does not "
                        f"build {arch!r}: {_short.repr(str(e))}") from None  # fmt: skip


def _read_header(f: IO[bytes], size: int, where: str) -> tuple[dict[str, Any], int]:
    """A safetensors file's header (names -> dtype, shape, offsets) and its length, checked against ``size``."""
    if size < 8:
        raise DataError(f"{where} is {size} bytes, too short for a safetensors file")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > min(MAX_HEADER_BYTES, size - 8):
        raise DataError(f"{where}: its header claims {n} bytes, but the file holds {size - 8} after the length")
    try:
        header = json.loads(f.read(n))
    except (ValueError, RecursionError) as e:
        raise DataError(f"{where}: its header is not valid JSON ({_short.repr(str(e))})") from None
    if not isinstance(header, dict):
        raise DataError(f"{where}: its header is not a JSON object")
    header.pop("__metadata__", None)
    for name, t in header.items():
        ok = isinstance(t, dict) and t.get("dtype") in _ITEMSIZE and isinstance(t.get("shape"), list)
        ok = ok and all(_is_int(d) and d >= 0 for d in t["shape"]) and isinstance(t.get("data_offsets"), list)
        if not (ok and len(t["data_offsets"]) == 2 and all(_is_int(o) for o in t["data_offsets"])):
            raise DataError(f"{where}: tensor {_short.repr(name)} has a malformed header entry {_short.repr(t)}")
    body, end = size - 8 - n, 0
    for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, stop = t["data_offsets"]
        if begin != end or stop - begin != math.prod(t["shape"]) * _ITEMSIZE[t["dtype"]] or stop > body:
            raise DataError(f"{where}: tensor {_short.repr(name)}'s offsets {[begin, stop]} do not match its shape "
                            f"{t['shape']} and dtype {t['dtype']} in a {body}-byte body (the header lies)")  # fmt: skip
        end = stop
    if end != body:
        raise DataError(f"{where}: the header describes {end} bytes of tensors but the body holds {body}")
    return header, n


def _check_fits(folder: Path, meta: dict[str, Any], header: dict[str, Any], skeleton: nn.Module) -> None:
    """The header's tensors are exactly the architecture's (names, shapes, dtypes), before the body is read."""
    want = {k: (_DTYPES.get(v.dtype, (str(v.dtype), 0))[0], list(v.shape)) for k, v in skeleton.state_dict().items()}
    got = {k: (t["dtype"], t["shape"]) for k, t in header.items()}
    if want != got:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        detail = "; ".join(
            f"{label}: {_short.repr(keys)}"
            for label, keys in (("missing", missing), ("unexpected", extra), ("other shape or dtype", wrong))
            if keys
        )
        raise DataError(f"checkpoint {folder}: weights do not fit architecture {meta['architecture']!r}: {detail}")


def _read_weights(folder: Path, meta: dict[str, Any], skeleton: nn.Module) -> bytes:
    """The weights file's bytes: a regular file in the folder whose header is sane and fits ``skeleton``."""
    name = meta["weights"]
    what = f"{META} field 'weights' = {_short.repr(name)}"
    try:
        with _open_inside(folder, name, what, MAX_WEIGHTS_BYTES) as (f, size):
            header, _ = _read_header(f, size, f"checkpoint {folder}: {name}")
            _check_fits(folder, meta, header, skeleton)
            f.seek(0)
            blob = f.read(size)
    except FileNotFoundError:
        raise DataError(f"checkpoint {folder}: weights file {name} named in {META} is missing") from None
    if len(blob) != size:
        raise DataError(f"checkpoint {folder}: {name} was truncated while it was read")
    return blob


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint folder, in eval mode, with its weights.

    Checks every field of ``meta.json``; reads the weights file only if it is a
    regular file beside ``meta.json`` whose safetensors header fits the recorded
    architecture exactly; checks its sha256 against ``meta.json``.

    Returns:
        ``(model, meta)``.

    Raises:
        DataError: missing, malformed or mismatched files, or weights that do not fit;
            the message names the folder, the field and the value.
    """
    folder = Path(path)
    meta = read_meta(folder)
    blob = _read_weights(folder, meta, _build(folder, meta, "meta"))
    if sha256_bytes(blob) != meta["sha256"]:
        raise DataError(f"checkpoint {folder}: {meta['weights']} does not match the sha256 in {META}; it is corrupt")
    model = _build(folder, meta, "cpu")
    try:
        state = _safetensors().load(blob)
        model.load_state_dict(state, strict=True)
    except Exception as e:  # safetensors' own checks (SafetensorError derives from Exception only)
        raise DataError(f"checkpoint {folder}: weights do not fit architecture {meta['architecture']!r}: "
                        f"{_short.repr(str(e))}") from None  # fmt: skip
    return model.to(device).eval(), meta
