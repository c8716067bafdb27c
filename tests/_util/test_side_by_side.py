"""Chunks side by side, one torch thread each: order, concurrency, errors, and torch's thread count restored."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

import camlens
import camlens.methods.scorecam as scorecam_module
from camlens._util.threads import ordered_map
from camlens.methods import _rerun
from testmodels import small_resnet


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_results_come_in_order_from_at_most_workers_threads_at_once(two_threads: None) -> None:
    lock, running, most, seen = threading.Lock(), [0], [0], []

    def fn(i: int) -> tuple[int, int, str]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02 * (5 - i % 5))  # later items finish first
        with lock:
            running[0] -= 1
        return i * i, torch.get_num_threads(), threading.current_thread().name

    for sq, threads, name in ordered_map(fn, range(12), workers=3):
        seen.append(sq)
        assert threads == 1 and name.startswith("camlens")
        assert torch.get_num_threads() == 2  # this thread's own count is the workers' business only
    assert seen == [i * i for i in range(12)]
    assert most[0] == 3
    assert torch.get_num_threads() == 2


def test_one_worker_is_plain_map_in_this_thread(two_threads: None) -> None:
    here = threading.current_thread().name
    got = list(ordered_map(lambda i: (i, torch.get_num_threads(), threading.current_thread().name), range(3), 1))
    assert got == [(0, 2, here), (1, 2, here), (2, 2, here)]


def test_an_error_in_a_chunk_is_raised_and_the_thread_count_restored(two_threads: None) -> None:
    def fn(i: int) -> int:
        if i == 3:
            raise ValueError("chunk 3")
        return i

    with pytest.raises(ValueError, match="chunk 3"):
        list(ordered_map(fn, range(8), workers=2))
    assert torch.get_num_threads() == 2


def test_other_threads_keep_their_count_while_a_map_runs(two_threads: None) -> None:
    ready, mapping, seen = threading.Event(), threading.Event(), []

    def other() -> None:
        torch.get_num_threads()  # a thread takes the process-wide count at its first torch call...
        torch.set_num_threads(2)  # ...then keeps its own
        ready.set()
        mapping.wait()
        seen.append(torch.get_num_threads())

    t = threading.Thread(target=other)
    t.start()
    ready.wait()

    def fn(i: int) -> int:
        mapping.set()
        time.sleep(0.05)
        return torch.get_num_threads()

    assert list(ordered_map(fn, range(4), workers=2)) == [1, 1, 1, 1]
    t.join()
    assert seen == [2] and torch.get_num_threads() == 2


def test_score_cam_chunks_side_by_side_give_the_one_at_a_time_maps(
    two_threads: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_rerun, "MIN_ROWS_TO_BUILD", 0)
    torch.manual_seed(0)
    model, x = small_resnet(), torch.randn(3, 3, 16, 16)
    for cls in (camlens.ScoreCAM, camlens.SSCAM):
        cam = cls(model, "layer3", batch_size=8)
        side = cam(x, target=[1, 2, 3]).raw["layer3"]
        assert cam.inference_copy.last_used == "optimized copy"
        monkeypatch.setattr(scorecam_module, "MIN_ROWS_PER_WORKER", 10**9)
        alone = cam(x, target=[1, 2, 3]).raw["layer3"]
        monkeypatch.undo()
        monkeypatch.setattr(_rerun, "MIN_ROWS_TO_BUILD", 0)
        torch.testing.assert_close(side, alone, rtol=1e-5, atol=1e-7)
        assert float(alone.abs().amax()) > 0
        assert torch.get_num_threads() == 2


def test_chunks_share_the_memory_budget(two_threads: None) -> None:
    per, workers = scorecam_module.side_by_side(300, 10**6, None)
    assert (per, workers) == (150, 2)  # two chunks in flight, each half the budget's rows
    assert scorecam_module.side_by_side(1000, 10**6, None) == (scorecam_module.CPU_MAX_ROWS, 2)
    assert scorecam_module.side_by_side(300, 150, None) == (256, 1)  # one chunk: nothing to run beside it
    assert scorecam_module.side_by_side(20, 10**6, None) == (20, 1)  # halves would fall under 16 rows
    assert scorecam_module.side_by_side(64, 10**6, 64) == (64, 2)  # batch_size: each chunk keeps it
    assert scorecam_module.side_by_side(8, 10**6, 8) == (8, 1)
    torch.set_num_threads(1)
    assert scorecam_module.side_by_side(300, 10**6, None) == (256, 1)
