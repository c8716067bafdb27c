"""Several threads on one model and one method object: each call gets exactly its own maps.

The rule (BaseCAM's and camlens.core.capture's docstrings): a call's hooks act
only in the calling thread, and Score-CAM's inference copy is checked and
rebuilt under a lock and handed to each call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import camlens
from camlens.core.capture import capture
from camlens.errors import InputError
from camlens.methods import _rerun
from testmodels import hook_count, seeded, small_resnet

THREADS, CALLS = 3, 4


class Meet(nn.Module):
    """Waits in ``forward`` until every thread is there: their forward passes overlap for certain."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.barrier.wait()
        return x


def met_net(parties: int) -> nn.Sequential:
    """Meet -> conv -> ReLU -> conv -> ReLU -> GAP -> linear: every forward pass of the threads overlaps."""

    def build() -> nn.Sequential:
        layers = [Meet(parties), nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1)]
        return nn.Sequential(*layers, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))

    return seeded(build)


def inputs(n: int, shape: tuple[int, ...] = (2, 3, 16, 16)) -> list[torch.Tensor]:
    return [torch.randn(*shape, generator=torch.Generator().manual_seed(100 + i)) for i in range(n)]


def in_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """``[work(0), ..., work(n - 1)]``, each in its own thread; re-raises the first error."""
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = work(i)
        except BaseException as e:  # handed to the test thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


def test_a_capture_records_only_its_own_threads_forward() -> None:
    net, xs = met_net(2), inputs(2)

    def work(i: int) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        with capture(net, {"1": net[1]}, lazy=False) as cap:
            net(xs[i])  # both captures are open while both forward passes run layer 1
        return cap.activations, cap.calls

    for i, (acts, calls) in enumerate(in_threads(2, work)):
        assert calls == {"1": 1}
        torch.testing.assert_close(acts["1"].detach(), net[1](xs[i]).detach(), rtol=0, atol=0)
    assert hook_count(net) == 0


@pytest.mark.parametrize("name", ["gradcam", "layercam", "gradcam++", "hirescam", "guided-gradcam", "eigencam"])
def test_overlapping_calls_of_one_method_object_give_the_single_threaded_maps(name: str) -> None:
    net, xs = met_net(2), inputs(CALLS)
    cam = camlens.get_method(name)(net, "3")
    solo = met_net(1)
    solo.load_state_dict(net.state_dict())
    ref = [camlens.get_method(name)(solo, "3")(x).map for x in xs]

    def work(t: int) -> list[torch.Tensor]:
        return [cam(xs[(j + t) % CALLS]).map for j in range(CALLS)]  # every forward pass overlaps the other's

    for t, maps in enumerate(in_threads(2, work)):
        for j, m in enumerate(maps):
            torch.testing.assert_close(m, ref[(j + t) % CALLS], rtol=1e-5, atol=1e-6)
    assert hook_count(net) == 0


def many(cam: camlens.BaseCAM, xs: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """THREADS threads, each calling ``cam`` on every input once, starting at its own offset."""
    start = threading.Barrier(THREADS, timeout=10)

    def work(t: int) -> list[torch.Tensor]:
        start.wait()
        return [cam(xs[(j + t) % len(xs)]).map for j in range(len(xs))]

    return in_threads(THREADS, work)


METHODS: dict[str, Callable[[nn.Module], camlens.BaseCAM]] = {
    "gradcam": lambda m: camlens.GradCAM(m, "layer3"),
    "layercam": lambda m: camlens.LayerCAM(m, "layer3"),
    "scorecam": lambda m: camlens.ScoreCAM(m, "layer3", optimize=False),
    "scorecam-optimized": lambda m: camlens.ScoreCAM(m, "layer3", optimize=True),
    "ablationcam": lambda m: camlens.AblationCAM(m, "layer3"),
    "gradcam-auto-layer": lambda m: camlens.GradCAM(m),
    "smooth-noise": lambda m: camlens.NoiseSmooth(m, "layer3", n_samples=3),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_threads_by_calls_on_one_model_and_one_method_object(name: str) -> None:
    model, xs = small_resnet(), inputs(CALLS, (1, 3, 16, 16))
    ref = [METHODS[name](model)(x).map for x in xs]
    cam = METHODS[name](model)
    for t, maps in enumerate(many(cam, xs)):
        for j, m in enumerate(maps):
            torch.testing.assert_close(m, ref[(j + t) % CALLS], rtol=1e-4, atol=1e-5)
    assert hook_count(model) == 0
    if name == "scorecam-optimized":
        assert cam.inference_copy.last_used is None  # per thread: this thread made no call on cam
        cam(xs[0])
        assert cam.inference_copy.last_used == "optimized copy"


def test_the_inference_copy_is_built_once_under_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    model, xs = small_resnet(), inputs(CALLS, (1, 3, 16, 16))
    ref = [camlens.ScoreCAM(model, "layer3", optimize=False)(x).map for x in xs]
    cam = camlens.ScoreCAM(model, "layer3", optimize=True)
    builds, inside, most = [], [0], [0]
    real = _rerun.InferenceCopy._build

    def build(self: _rerun.InferenceCopy, m: nn.Module, key: tuple[Any, ...], x1: torch.Tensor) -> None:
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        try:
            if key != self._key:
                builds.append(key)
            real(self, m, key, x1)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(_rerun.InferenceCopy, "_build", build)
    for t, maps in enumerate(many(cam, xs)):
        for j, m in enumerate(maps):
            torch.testing.assert_close(m, ref[(j + t) % CALLS], rtol=1e-4, atol=1e-5)
    assert len(builds) == 1 and most[0] == 1


def test_another_threads_open_capture_neither_blocks_nor_enters_the_inference_copy() -> None:
    model, x = small_resnet(), inputs(1, (1, 3, 16, 16))[0]
    ref = camlens.ScoreCAM(model, "layer3", optimize=False)(x).map
    opened, done = threading.Event(), threading.Event()

    def hold(_: int) -> dict[str, torch.Tensor]:
        with capture(model, {"layer3": model.layer3, "fc": model.fc}) as cap:
            opened.set()
            assert done.wait(timeout=30)
        return cap.activations

    holder = threading.Thread(target=lambda: seen.append(hold(0)))
    seen: list[dict[str, torch.Tensor]] = []
    holder.start()
    try:
        assert opened.wait(timeout=10)
        cam = camlens.ScoreCAM(model, "layer3", optimize=True)  # the other thread's hooks do not make it ineligible
        torch.testing.assert_close(cam(x).map, ref, rtol=1e-4, atol=1e-5)
        copy = cam.inference_copy._copy
        assert copy is not None and hook_count(copy) == 0
    finally:
        done.set()
        holder.join(timeout=10)
    assert seen == [{}]  # the held capture recorded none of this thread's forward passes
    assert hook_count(model) == 0


def test_this_threads_own_open_capture_still_keeps_the_copy_out() -> None:
    model, x = small_resnet(), inputs(1, (1, 3, 16, 16))[0]
    cam = camlens.ScoreCAM(model, "layer3", optimize=True)
    with capture(model, {"fc": model.fc}), pytest.raises(InputError, match=r"module 'fc' has forward hooks"):
        cam(x)
    assert hook_count(model) == 0
