"""The harness every benchmark here shares: side-by-side timing on torch.utils.benchmark, one CLI, one table.

A benchmark compares contenders (camlens against a floor, a peer library, an
older version of itself) *in the same process, interleaved*: every round
times each contender once, in turn, so load from other processes on a shared
machine falls on all of them alike, and the figures are medians over rounds
and ratios of those medians.

    import harness

    p = harness.parser(__doc__, rounds=15)             # --threads and --rounds, plus the benchmark's own
    args = p.parse_args()
    harness.set_threads(args.threads)
    run = harness.SideBySide({"floor": floor, "camlens": ours}).run(args.rounds)
    harness.print_ratios(run, [("camlens", "floor")])   # | camlens / floor | 1.01 |

Timing modes of :class:`SideBySide`:

- ``"autorange"`` (the default, for calls of up to about a second): each
  round is one ``torch.utils.benchmark.Timer.blocked_autorange`` per
  contender: a warm-up call that also sizes the block, then the timed
  call(s). With ``min_run_time=0`` (the default) that is one timed call per
  contender and round, as the benchmarks always measured; a positive
  ``min_run_time`` times blocks of fast calls for that many seconds. The
  rounds are merged (``Measurement.merge``) into per-call times.
- ``"once"`` (for long, stateful runs: a whole dataset pass, an evaluation):
  each round calls every contender exactly once between two reads of
  ``torch.utils.benchmark.timer`` (which synchronizes the accelerator).
- ``"self-timed"``: as ``"once"``, but the contender returns the seconds it
  measured itself, to leave its own set-up and clean-up (a temporary output
  folder, say) off the clock.

Either way every result is a ``torch.utils.benchmark.Measurement``, so
``median``, ``raw_times`` and ``torch.utils.benchmark.Compare`` work on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.benchmark import Measurement, TaskSpec, Timer, timer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

for _p in (ROOT / "src", ROOT / "tests", HERE):  # camlens, the tests' models, benchmarks/models.py
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

Mode = Literal["autorange", "once", "self-timed"]


def parser(description: str | None, *, rounds: int, rounds_aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The benchmarks' common command line: ``--threads`` and ``--rounds`` (with the benchmark's old name for it).

    Args:
        description: the module docstring; its first line is the summary, the rest is shown verbatim by ``--help``.
        rounds: default number of interleaved rounds.
        rounds_aliases: other spellings of ``--rounds`` a benchmark accepted before (``--reps``, ``--repeats``).
    """
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", *rounds_aliases, dest="rounds", type=int, default=rounds,
                   help=f"interleaved rounds; figures are medians over them (default {rounds})")  # fmt: skip
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default 0: torch's own choice)")
    return p


def set_threads(threads: int | None) -> int:
    """Apply ``--threads`` (0 or None keeps torch's default) and return the number of threads in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` once and return its result and the seconds it took (accelerator synchronized on both ends)."""
    t0 = timer()
    out = fn()
    return out, timer() - t0


def _task(name: str, label: str, sub_label: str) -> TaskSpec:
    return TaskSpec(stmt=f"{name}()", setup="pass", label=label, sub_label=sub_label, description=name,
                    num_threads=torch.get_num_threads())  # fmt: skip


class SideBySide:
    """Time contenders interleaved, round after round, each round one measurement per contender.

    Args:
        fns: contender name -> zero-argument callable; the first is the usual denominator of the ratios.
        mode: ``"autorange"``, ``"once"`` or ``"self-timed"`` (see the module docstring).
        min_run_time: seconds of calls per contender and round in ``"autorange"`` mode.
        alternate: reverse the order every other round (A B, B A, ...), so slow drift favours no one.
        label, sub_label: carried into each ``Measurement`` (for ``torch.utils.benchmark.Compare``).
        after_each: called as ``after_each(round, name, seconds_per_call)`` after every measurement.
    """

    def __init__(
        self,
        fns: Mapping[str, Callable[[], Any]],
        *,
        mode: Mode = "autorange",
        min_run_time: float = 0.0,
        alternate: bool = False,
        label: str = "",
        sub_label: str = "",
        after_each: Callable[[int, str, float], None] | None = None,
    ) -> None:
        self.fns, self.mode, self.min_run_time, self.alternate = dict(fns), mode, min_run_time, alternate
        self.label, self.sub_label, self.after_each = label, sub_label, after_each
        self.measurements: dict[str, list[Measurement]] = {k: [] for k in self.fns}

    def _measure(self, name: str) -> Measurement:
        fn = self.fns[name]
        if self.mode != "autorange":
            seconds = float(fn()) if self.mode == "self-timed" else timed(fn)[1]
            return Measurement(number_per_run=1, raw_times=[seconds], task_spec=_task(name, self.label, self.sub_label))
        t = Timer(stmt="fn()", globals={"fn": fn}, label=self.label, sub_label=self.sub_label, description=name,
                  num_threads=torch.get_num_threads())  # fmt: skip
        return t.blocked_autorange(min_run_time=self.min_run_time)

    def run(self, rounds: int, warmup: int = 0) -> Run:
        """``warmup`` untimed calls of each contender, then ``rounds`` interleaved rounds."""
        for fn in self.fns.values():
            for _ in range(warmup):
                fn()
        names = list(self.fns)
        for r in range(rounds):
            for name in reversed(names) if self.alternate and r % 2 else names:
                m = self._measure(name)
                self.measurements[name].append(m)
                if self.after_each is not None:
                    self.after_each(r, name, m.median)
        return Run({k: Measurement.merge(v)[0] for k, v in self.measurements.items()}, self.measurements)


class Run:
    """The result of :meth:`SideBySide.run`: one merged ``Measurement`` per contender, and the rounds' own."""

    def __init__(self, merged: dict[str, Measurement], rounds: dict[str, list[Measurement]]) -> None:
        self.merged, self.rounds = merged, rounds

    def median(self, name: str) -> float:
        """Median seconds per call of ``name`` over every timed call (or block of calls) of every round."""
        return self.merged[name].median

    def medians(self) -> dict[str, float]:
        return {k: m.median for k, m in self.merged.items()}

    def per_round(self, name: str) -> list[float]:
        """Seconds per call of ``name`` in each round (that round's median)."""
        return [m.median for m in self.rounds[name]]

    def ratio(self, a: str, b: str) -> float:
        """median(a) / median(b): above 1, ``a`` takes longer."""
        return self.median(a) / self.median(b)

    def paired_ratio(self, a: str, b: str) -> float:
        """The median over rounds of a / b measured in the same round."""
        return statistics.median(x / y for x, y in zip(self.per_round(a), self.per_round(b), strict=True))


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A Markdown table (pastes into docs/benchmarks/*.md as it is)."""
    print_row(header)
    print("|" + " --- |" * len(header))
    for row in rows:
        print_row(row)


def print_row(row: Sequence[object]) -> None:
    """One more row of a table begun with ``print_table(header, [])``, printed at once."""
    print("| " + " | ".join(str(c) for c in row) + " |", flush=True)


def print_ratios(run: Run, pairs: Sequence[tuple[str, str]], digits: int = 2) -> None:
    """One table row per ``(a, b)``: the ratio of medians a / b and the median of the same-round ratios."""
    print_table(["ratio", "of medians", "median of per-round"],
                [(f"{a} / {b}", f"{run.ratio(a, b):.{digits}f}", f"{run.paired_ratio(a, b):.{digits}f}")
                 for a, b in pairs])  # fmt: skip
