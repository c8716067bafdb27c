"""While camlens traces a model with torch.fx, other threads' modules run as if no trace were open.

torch.fx replaces ``nn.Module.__call__`` for the whole process during a trace;
CI once caught a Score-CAM call building its optimized copy while another
thread's call ran the user's model (``NameError: module is not installed as a
submodule``). These tests open that window on purpose, with a module that,
when traced, runs another model in a second thread and waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
import torch
from torch import fx, nn

import camlens
from camlens.methods._tracing import TRACE_LOCK, CopyTracer, trace, without_dropout
from testmodels import GapNet, seeded


class MidTrace(nn.Module):
    """The identity; while traced (its input is a proxy) it first calls :attr:`during_trace`."""

    during_trace: ClassVar[Callable[[], None] | None] = None

    def forward(self, x: Any) -> Any:
        if isinstance(x, fx.Proxy) and MidTrace.during_trace is not None:
            MidTrace.during_trace()
        return x


def in_other_thread(fn: Callable[[], Any]) -> Any:
    """``fn()`` run in a new thread, waited for; its result or its error."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # handed back to the tracing thread
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    return out


@pytest.fixture
def other_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = seeded(GapNet).eval()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model, x, model(x)


def traced_while_other_runs(tracer: fx.Tracer, other: nn.Module, x: torch.Tensor) -> tuple[fx.Graph, dict[str, Any]]:
    seen: dict[str, Any] = {}

    def run_other() -> None:
        seen["locked"] = TRACE_LOCK.locked()
        seen.update(in_other_thread(lambda: other(x)))

    model = nn.Sequential(nn.Conv2d(3, 4, 3), MidTrace(), nn.ReLU())
    MidTrace.during_trace = run_other
    try:
        return tracer.trace(model), seen
    finally:
        MidTrace.during_trace = None


def test_the_window_is_real_with_torch_fx_own_tracer(other_model: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    other, x, _ = other_model
    _, seen = traced_while_other_runs(fx.Tracer(), other, x)
    assert isinstance(seen.get("error"), NameError)  # what CI met


def test_another_thread_runs_its_model_untouched_during_a_camlens_trace(
    other_model: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    other, x, want = other_model
    graph, seen = traced_while_other_runs(CopyTracer(), other, x)
    assert "error" not in seen
    assert seen["locked"] and not TRACE_LOCK.locked()  # held during the trace only: one camlens trace at a time
    assert type(seen["value"]) is torch.Tensor
    assert torch.equal(seen["value"], want)
    # and the trace itself is whole: conv, relu, nothing of the other model
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "call_module", "output"]
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["0", "2"]


class WithMidTrace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = GapNet()
        self.mid = MidTrace()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.fc(self.net.pool(self.mid(self.net.features(x))).flatten(1))


def test_a_score_cam_call_building_its_copy_leaves_other_threads_calls_alone() -> None:
    """The CI case end to end: one thread builds the copy while another runs the same model."""
    model = seeded(WithMidTrace).eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(x)
    ref = camlens.ScoreCAM(model, "net.features.2", optimize=False)(x).map
    seen: dict[str, Any] = {}
    MidTrace.during_trace = lambda: seen.update(in_other_thread(lambda: model(x)))
    try:
        cam = camlens.ScoreCAM(model, "net.features.2", optimize=True)
        got = cam(x).map
    finally:
        MidTrace.during_trace = None
    assert "error" not in seen
    assert torch.equal(seen["value"], want)
    assert cam.inference_copy.last_used == "optimized copy"
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_without_dropout_takes_out_every_dropout_kind() -> None:
    model = seeded(
        lambda: nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.Dropout2d(0.5), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.AlphaDropout(0.3),
            nn.Linear(4 * 6 * 6, 3),
        )
    ).eval()
    gm = without_dropout(trace(model))
    assert [type(m).__name__ for m in gm.children()] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(gm(x), model(x))
