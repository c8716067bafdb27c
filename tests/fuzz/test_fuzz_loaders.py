"""Fuzz the three loaders that read files we did not write (issue 11), with hypothesis, for a bounded time.

The checkpoint loader, the results (manifest + shard) reader and the IDX reader
get arbitrary and mutated bytes. Whatever comes in, only a camlens error may
come out (or a clean load), nothing is opened outside the folder under test,
and the process's peak memory grows by less than 512 MiB.
"""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import resource
import shutil
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import camlens
from camlens.demo.checkpoint import load_checkpoint, save_checkpoint
from camlens.demo.data.idx import read_idx
from camlens.demo.models import ConvNet
from camlens.errors import CamlensError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
GROWTH_LIMIT_KIB = 512 * 1024


@contextmanager
def only_inside(folder: Path) -> Iterator[list[str]]:
    """Record every file opened outside ``folder`` (module imports were all done before) while the block runs."""
    outside: list[str] = []
    root = str(folder.resolve())
    real_open, real_os_open = builtins.open, os.open

    def check(path: object) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            p = os.path.realpath(os.fsdecode(path))
            if not p.startswith(root):
                outside.append(p)

    def guarded_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        check(file)
        return real_open(file, *args, **kwargs)

    def guarded_os_open(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        check(path)
        return real_os_open(path, *args, **kwargs)

    builtins.open, io.open, os.open = guarded_open, guarded_open, guarded_os_open  # type: ignore[assignment]
    try:
        yield outside
    finally:
        builtins.open, io.open, os.open = real_open, real_open, real_os_open  # type: ignore[assignment]


def _load_survives(folder: Path, load: Callable[[], object]) -> None:
    """``load()`` ends in a clean result or a CamlensError, opens nothing outside ``folder``, bounded memory."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with only_inside(folder) as outside, suppress(CamlensError):
        load()
    assert outside == []
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < GROWTH_LIMIT_KIB


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        if buf:
            buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


EDITS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=12)
CUT = st.none() | st.integers(0, 4096)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz-ckpt") / "ckpt"
    save_checkpoint(folder, ConvNet(), {"architecture": "convnet", "epochs": 1, "classes": ["a"] * 10})
    load_checkpoint(folder)  # every lazy import happens here, before the guards
    return folder


@FUZZ
@given(which=st.sampled_from(["meta", "weights"]), edits=EDITS, cut=CUT, raw=st.none() | st.binary(max_size=512))
def test_checkpoint_loader_any_bytes(checkpoint, tmp_path_factory, which, edits, cut, raw):
    folder = tmp_path_factory.mktemp("case") / "ckpt"
    shutil.copytree(checkpoint, folder)
    meta = json.loads((folder / "meta.json").read_text())
    target = folder / ("meta.json" if which == "meta" else meta["weights"])
    target.write_bytes(raw if raw is not None else _mutate(target.read_bytes(), edits, cut))
    _load_survives(folder, lambda: load_checkpoint(folder))


@FUZZ
@given(field=st.sampled_from(["weights", "sha256", "architecture", "model_kwargs", "classes", "history", "format"]),
       value=st.none() | st.booleans() | st.integers() | st.text(max_size=40) | st.lists(st.integers(), max_size=3)
       | st.sampled_from(["../../etc/passwd", "/dev/zero", "/etc/hostname", "..", "weights-../x.safetensors"]))
def test_checkpoint_loader_any_meta_field(checkpoint, tmp_path_factory, field, value):
    folder = tmp_path_factory.mktemp("case") / "ckpt"
    shutil.copytree(checkpoint, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta[field] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    _load_survives(folder, lambda: load_checkpoint(folder))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    import torch

    folder = tmp_path_factory.mktemp("fuzz-results") / "maps"
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10))  # fmt: skip
    camlens.explain_dataset(model, "fashion-mnist:test", folder, layers="1", limit=12, shard_size=8, batch_size=4,
                            progress=False, device="cpu")  # fmt: skip
    camlens.open_results(folder).verify()  # lazy imports done here
    return folder


def _read_all(folder: Path) -> None:
    res = camlens.open_results(folder)
    res.verify()
    for i in range(len(res)):
        res[i]


@FUZZ
@given(which=st.sampled_from(["manifest.json", "shard-000000.safetensors", "shard-000001.json"]), edits=EDITS, cut=CUT,
       raw=st.none() | st.binary(max_size=512))
def test_results_reader_any_bytes(results, tmp_path_factory, which, edits, cut, raw):
    folder = tmp_path_factory.mktemp("case") / "maps"
    shutil.copytree(results, folder)
    target = folder / which
    target.write_bytes(raw if raw is not None else _mutate(target.read_bytes(), edits, cut))
    _load_survives(folder, lambda: _read_all(folder))


def _idx_header(dims: list[int]) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)


@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=4), body=st.binary(max_size=256),
       zipped=st.booleans(), edits=EDITS, cut=CUT)
def test_idx_reader_any_bytes(tmp_path_factory, dims, body, zipped, edits, cut):
    folder = tmp_path_factory.mktemp("idx")
    data = _mutate(_idx_header(dims) + body, edits[:3], cut)
    path = folder / ("x-idx3-ubyte.gz" if zipped else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if zipped else data)
    _load_survives(folder, lambda: read_idx(path))


def test_the_harness_catches_what_it_should(tmp_path):
    with pytest.raises(ZeroDivisionError):  # a non-camlens error escapes
        _load_survives(tmp_path, lambda: 1 / 0)
    with pytest.raises(AssertionError):  # a read outside the folder fails the case
        _load_survives(tmp_path, lambda: Path(__file__).read_bytes())
    with only_inside(tmp_path) as outside, open(__file__, "rb"):
        pass
    assert outside == [os.path.realpath(__file__)]
