"""keep_freed_memory: on glibc, repeated large batches stop faulting in fresh pages; the CLI turns it on."""

from __future__ import annotations

import subprocess
import sys

import pytest

import camlens.cli
from camlens._util import allocator

# Two 24 MiB buffers made, written and freed 20 times: with glibc's defaults the 48 MiB freed at the top of the
# heap exceeds the (dynamic) trim threshold and goes back to the kernel, so every round faults its pages in again.
_CHURN = """
import importlib.util, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])  # the module alone: no torch import
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory() is True
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def churn():
    a = bytearray(24 << 20); b = bytearray(24 << 20); a[::4096] = b[::4096] = b"x" * (6 << 10); del a, b
for _ in range(3):
    churn()
before = faults()
for _ in range(20):
    churn()
print(faults() - before)
"""


def _faults(mode: str) -> int:
    cmd = [sys.executable, "-c", _CHURN, mode, str(allocator.__file__)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_kept_memory_is_reused_without_page_faults():
    default, kept = _faults("default"), _faults("keep")
    pages = 20 * 2 * 24 * 1024 * 1024 // 4096  # what faulting every page in every round costs
    assert default > pages // 2, default  # the defaults hand the memory back and fault it in again
    assert kept < pages // 20, kept  # kept: reused from the heap


def test_the_command_line_turns_it_on(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(camlens.cli, "keep_freed_memory", lambda: calls.append(1) or True)
    assert camlens.cli.main(["methods"]) == 0
    assert calls == [1]
    assert "gradcam" in capsys.readouterr().out


def test_without_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
