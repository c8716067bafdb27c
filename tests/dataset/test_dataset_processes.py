"""explain-dataset as separate processes: SIGKILL at random points then resume; torchrun with gloo."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch as st
import torch

import camlens
from camlens.dataset import open_results
from testmodels import write_factory

SRC = str(Path(camlens.__file__).resolve().parents[1])
FACTORY = """
import torch
from camlens.demo.models import ConvNet

def model():
    torch.manual_seed(0)
    m = ConvNet()
    with torch.no_grad():
        m.seq[7].weight.mul_(300.0)
    return m
"""


def env(**extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = SRC + os.pathsep + e.get("PYTHONPATH", "")
    e.update(extra)
    return e


@pytest.fixture(scope="module")
def factory(tmp_path_factory) -> str:
    return write_factory(tmp_path_factory.mktemp("factory"), FACTORY, "model", "factory.py")


def cli(factory: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "camlens.cli", "explain-dataset", "--model", factory, "--data", "fashion-mnist:test",
        "--out", str(out), "--layers", "seq.2", "seq.4", "--no-progress", *extra,
    ]  # fmt: skip


def shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.safetensors"))}


def check_no_corrupt_or_half_listed(folder: Path) -> int:
    """After a kill: every shard with a record matches it; the manifest, if any, is whole JSON. Returns #finished."""
    done = 0
    for rec_path in folder.glob("shard-*.json"):
        record = json.loads(rec_path.read_text())  # a record is whole, or absent
        blob = (folder / record["file"]).read_bytes()
        assert hashlib.sha256(blob).hexdigest() == record["sha256"], f"{record['file']} listed but corrupt"
        done += 1
    if (folder / "manifest.json").exists():
        manifest = json.loads((folder / "manifest.json").read_text())
        # never half-listed: the start-of-run manifest lists nothing, the end-of-run one lists every shard
        # (a kill can land after it is written, or the run can finish before the kill)
        if manifest["complete"]:
            assert len(manifest["shards"]) == 12
            for record in manifest["shards"]:
                assert hashlib.sha256((folder / record["file"]).read_bytes()).hexdigest() == record["sha256"]
        else:
            assert manifest["shards"] == []
    return done


RESUME_ARGS = ("--limit", "1200", "--shard-size", "100", "--batch-size", "50")


def test_sigkill_at_random_points_then_resume_gives_every_item_once_and_the_same_bytes(tmp_path, factory):
    ref = tmp_path / "ref"
    subprocess.run(cli(factory, ref, *RESUME_ARGS), env=env(), check=True, capture_output=True)
    expected = shards(ref)
    assert len(expected) == 12
    rng = random.Random(20261126)
    kills_mid_run = 0
    for trial in range(3):
        out = tmp_path / f"trial{trial}"
        for _attempt in range(2):  # kill, resume and kill again at another point
            # wait until `after` shards are finished, then a random few milliseconds more
            after = rng.randrange(0, 12)
            proc = subprocess.Popen(
                cli(factory, out, *RESUME_ARGS), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if len(list(out.glob("shard-*.json"))) >= after:
                    time.sleep(rng.uniform(0, 0.03))
                    break
                time.sleep(0.002)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills_mid_run += 1
            proc.wait()
            check_no_corrupt_or_half_listed(out)
        finish = subprocess.run(cli(factory, out, *RESUME_ARGS), env=env(), capture_output=True, text=True)
        assert finish.returncode == 0, finish.stderr
        assert not list(out.glob(".*.tmp")), "temporary files of killed writes were not cleaned up"
        assert shards(out) == expected
        results = open_results(out)
        ids = torch.cat([st.load_file(str(p))["ids"] for p in sorted(out.glob("shard-*.safetensors"))])
        assert ids.tolist() == list(range(1200))  # every item exactly once, in order
        assert [results[i].id for i in (0, 599, 1199)] == [0, 599, 1199]
        assert (out / "class_stats.json").read_bytes() == (ref / "class_stats.json").read_bytes()
    assert kills_mid_run >= 4  # most kills landed while the run was going


def test_two_gloo_processes_give_the_same_bytes_as_one_and_resume_across_world_sizes(tmp_path, factory):
    args = ("--limit", "500", "--shard-size", "60", "--batch-size", "32")
    one, two = tmp_path / "one", tmp_path / "two"
    # torchrun gives each of its N > 1 processes OMP_NUM_THREADS=1; the single process gets the same, so
    # both run the same kernels (BLAS results can depend on the thread count, the item split does not)
    subprocess.run(cli(factory, one, *args), env=env(OMP_NUM_THREADS="1"), check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    # its own session, so that on a hang the whole group (launcher and ranks) is killed, never left behind
    proc = subprocess.Popen(
        torchrun + cli(factory, two, *args)[1:], env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    assert "on 2 process(es)" in stdout and stdout.count("explained 500 of 500 items") == 1  # rank 0 only
    assert shards(two) == shards(one) and len(shards(one)) == 9
    m1, m2 = (json.loads((d / "manifest.json").read_text()) for d in (one, two))
    assert m1["shards"] == m2["shards"] and m1["config"] == m2["config"]
    assert (one / "class_stats.json").read_bytes() == (two / "class_stats.json").read_bytes()
    # shard ids do not depend on the world size: drop two shards of the 2-process run, finish in one process
    for k in (3, 8):
        (two / f"shard-{k:06d}.json").unlink()
    (two / "shard-000003.safetensors").write_bytes(b"garbage")
    resumed = subprocess.run(cli(factory, two, *args), env=env(OMP_NUM_THREADS="1"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "shards: 2 computed, 7 already done, 9 in all" in resumed.stdout
    assert shards(two) == shards(one)
