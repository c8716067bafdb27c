"""The verdict of an evaluation in words: which method, at which layer, to trust for this model, if any.

Every ``method@layer`` that was scored is compared, image by image, with
every model-free baseline that was scored (a random map, the input's
intensity, its Sobel edges) on the three faithfulness metrics that remove or
restore pixels: deletion AUC, insertion AUC and ROAD. For each metric and
baseline the paired difference gets a 95 % bootstrap interval over images
(:meth:`camlens.evaluation.Evaluation.comparisons`):

- a method *beats* a baseline when it is better (the whole interval on the
  better side of zero) on at least one of the three metrics and worse on none;
- it *beats the baselines* when it beats every one of them.

The ranking orders every entry, baselines included, by its mean rank over the
three metrics (1 = best on that metric's mean). The recommendation is the
best-ranked method that beats the baselines; when none does, the verdict says
so, and no map of this model should be read as its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from camlens.evaluation.result import METRICS

if TYPE_CHECKING:
    from camlens.evaluation.result import Evaluation

__all__ = ["DECIDING", "RankedEntry", "Verdict", "verdict"]

#: the metrics the verdict weighs: each removes or restores pixels in the map's order.
DECIDING = ("deletion", "insertion", "road")

_SHORT = {"deletion": "deletion", "insertion": "insertion", "road": "ROAD"}


@dataclass(frozen=True)
class RankedEntry:
    """One scored entry in the verdict's ranking.

    Attributes:
        entry: ``"method@layer"`` or a baseline's name.
        method, layer: the method and layer (``None`` for a baseline).
        mean_rank: mean over :data:`DECIDING` of the entry's rank (1 = best) among all entries.
        against: baseline -> metric -> ``"better"``, ``"worse"`` or ``"undecided"`` (empty for a baseline).
    """

    entry: str
    method: str | None
    layer: str | None
    mean_rank: float
    against: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def is_baseline(self) -> bool:
        """True for a model-free baseline."""
        return self.method is None

    def beats(self, baseline: str) -> bool:
        """Better than ``baseline`` on at least one deciding metric and worse on none."""
        v = self.against[baseline].values()
        return "worse" not in v and "better" in v

    @property
    def beats_baselines(self) -> bool:
        """Beats every scored baseline (False when none was scored)."""
        return bool(self.against) and all(self.beats(b) for b in self.against)

    def describe(self) -> str:
        """One line: how the entry fares against each baseline."""
        if self.is_baseline:
            return "model-free baseline"
        if not self.against:
            return "no baseline to compare with"
        parts = []
        for b, verdicts in self.against.items():
            worse = [_SHORT[m] for m, v in verdicts.items() if v == "worse"]
            better = [_SHORT[m] for m, v in verdicts.items() if v == "better"]
            if self.beats(b):
                parts.append(f"beats {b} ({', '.join(better)})")
            elif worse:
                parts.append(f"loses to {b} on {', '.join(worse)}")
            else:
                parts.append(f"ties {b}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Verdict:
    """Which method to use for a model, in words and as data.

    Attributes:
        ranking: every scored entry, best first (:class:`RankedEntry`).
        recommended: ``(method, layer)`` of the best-ranked method that beats every baseline, or ``None``.
        baselines: the baselines compared against.
        skipped: ``(method, reason)`` for each method that could not be applied to the model.
        scored: what was scored: model, data, images, seeds, settings (from the evaluation's config).
    """

    ranking: list[RankedEntry]
    recommended: tuple[str, str] | None
    baselines: list[str]
    skipped: list[tuple[str, str]]
    scored: dict[str, Any]

    @property
    def headline(self) -> str:
        """The verdict in one sentence."""
        model = self.scored.get("model_name") or "this model"
        if not self.baselines:
            return f"No model-free baseline was scored, so no method can be recommended for {model}."
        if self.recommended is None:
            return (f"No method beats the model-free baselines ({', '.join(self.baselines)}) on {model}: "
                    "do not read these maps as the model's reasons.")  # fmt: skip
        method, layer = self.recommended
        at = "" if layer in (method, "input") else f" at {layer}"  # FullGrad's and guided backprop's maps: no layer
        return (f"For {model}, use {method}{at}: it beats every model-free baseline "
                f"({', '.join(self.baselines)}; better on deletion, insertion or ROAD and worse on none) "
                "and ranks best among the methods that do.")

    def setting_line(self) -> str:
        """What was scored: model, data, images, seeds and settings, in one line."""
        s = self.scored
        parts = [f"model {s.get('model') or s.get('model_name', '?')}"]
        if s.get("data"):
            parts.append(f"data {s['data']}")
        parts.append(f"{s.get('n_images', '?')} images")
        parts.append("seeds " + " ".join(str(x) for x in s.get("seeds", [])))
        parts.append(f"deletion/insertion {s.get('steps', '?')} steps ({s.get('deletion_baseline', '?')} / "
                     f"{s.get('insertion_baseline', '?')} start), ROAD noise {s.get('road_noise', '?')}")  # fmt: skip
        parts.append(f"class: {s.get('target', 'predicted class')}")
        return "; ".join(parts)

    def lines(self) -> list[str]:
        """The ranking as text lines, best first, then one line per skipped method."""
        out = [f"{i}. {r.entry} (mean rank {r.mean_rank:.1f}): {r.describe()}" for i, r in enumerate(self.ranking, 1)]
        out += [f"skipped {m}: {reason}" for m, reason in self.skipped]
        return out

    def text(self) -> str:
        """The whole verdict: the headline, what was scored, the ranking, the skipped methods."""
        head = "Ranking (mean rank over deletion, insertion and ROAD; paired 95 % intervals against each baseline):"
        return "\n".join(
            [f"Verdict: {self.headline}", f"Scored: {self.setting_line()}", head, *("  " + x for x in self.lines())]
        )

    def __str__(self) -> str:
        return self.text()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: headline, recommendation, ranking, skipped methods."""
        return {
            "headline": self.headline,
            "recommended": list(self.recommended) if self.recommended else None,
            "baselines": self.baselines,
            "ranking": [{"entry": r.entry, "method": r.method, "layer": r.layer, "mean_rank": r.mean_rank,
                         "beats_baselines": r.beats_baselines, "against": r.against} for r in self.ranking],
            "skipped": [{"method": m, "reason": why} for m, why in self.skipped],
        }  # fmt: skip


def _mean_ranks(ev: Evaluation) -> dict[str, float]:
    """Each entry's mean over :data:`DECIDING` of its rank (1 = best, ties share the mean rank) by the metric's mean."""
    totals = dict.fromkeys(ev.entries, 0.0)
    for m in DECIDING:
        higher = METRICS[m][1]
        means = {e: float(ev.values[e][m].double().mean()) for e in ev.entries}
        for e, v in means.items():
            ahead = sum(1 for w in means.values() if (w > v if higher else w < v))
            equal = sum(1 for w in means.values() if w == v)
            totals[e] += ahead + (equal + 1) / 2
    return {e: t / len(DECIDING) for e, t in totals.items()}


def verdict(ev: Evaluation) -> Verdict:
    """The :class:`Verdict` of an evaluation (see the module's docstring for the rule)."""
    from camlens.metrics import BASELINES

    baselines = [e for e in ev.entries if e in BASELINES]
    against: dict[str, dict[str, dict[str, str]]] = {e: {} for e in ev.entries if e not in BASELINES}
    for b in baselines:
        for row in ev.comparisons(b):
            if row["entry"] in against and row["metric"] in DECIDING:
                against[row["entry"]].setdefault(b, {})[row["metric"]] = row["verdict"]
    ranks = _mean_ranks(ev)
    ranking = []
    for e in sorted(ev.entries, key=lambda e: (ranks[e], e)):
        method, _, layer = e.partition("@") if e not in BASELINES else (None, "", None)
        ranking.append(RankedEntry(e, method, layer or None, ranks[e], against.get(e, {})))
    best = next((r for r in ranking if not r.is_baseline and r.beats_baselines), None)
    recommended = (best.method, best.layer) if best is not None and best.method and best.layer else None
    skipped = [(m, why) for m, why in ev.config.get("skipped", [])]
    return Verdict(ranking, recommended, baselines, skipped, dict(ev.config))
