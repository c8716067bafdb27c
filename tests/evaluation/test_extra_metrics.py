"""evaluate(extra_metrics=...) and `camlens evaluate --extra-metrics`: the opt-in metrics, equal to direct calls."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from camlens.cli import main
from camlens.demo.checkpoint import save_checkpoint
from camlens.demo.models import ConvNet
from camlens.errors import InputError
from camlens.evaluation import Evaluation, evaluate
from camlens.methods import get_method
from camlens.metrics import (
    OPT_IN_METRICS,
    boxes_to_mask,
    effective_complexity,
    efficient_mprt,
    max_sensitivity,
    pointing_game_hit,
    random_logit,
    random_map,
    relevance_rank_accuracy,
    smooth_mprt,
    sparseness,
)
from testmodels import SmallConvNet, seeded

SEEDS = (0, 1)
N_EXPLAIN = 3


def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = seeded(SmallConvNet).eval()
    x = torch.rand(5, 1, 10, 10, generator=torch.Generator().manual_seed(4))
    boxes = torch.tensor([[1, 1, 6, 6], [4, 2, 10, 7], [0, 5, 5, 10], [2, 2, 8, 8], [5, 0, 10, 4]])
    return model, x, boxes_to_mask(boxes, (10, 10))


def run(extra: Any = ()) -> Evaluation:
    model, x, mask = setup()
    return evaluate(model, x, methods=["gradcam", "guided-backprop"], layers=["seq.5"], seeds=SEEDS,
                    baselines=["random"], objects=mask, steps=2, sanity=False, sanity_images=N_EXPLAIN, n_boot=100,
                    extra_metrics=extra)  # fmt: skip


@pytest.fixture(scope="module")
def pair() -> tuple[Evaluation, Evaluation]:
    return run(), run(["all"])


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), atol=1e-9, rtol=0)


def test_map_only_metrics_equal_direct_calls_on_the_scored_maps(pair):
    model, x, mask = setup()
    ev = pair[1]
    assert list(ev.extra) == ["gradcam@seq.5", "guided-backprop@input", "random"]
    maps = {"gradcam@seq.5": get_method("gradcam")(model, "seq.5")(x).map,
            "guided-backprop@input": get_method("guided-backprop")(model)(x).map.mean(dim=1)}  # fmt: skip
    for s in SEEDS:
        for e, m in [*maps.items(), ("random", random_map(x, s))]:
            got = ev.extra[e]
            assert close(got["sparseness"][s], sparseness(m))
            assert close(got["effective-complexity"][s], effective_complexity(m))
            assert close(got["pointing-game-hit"][s], pointing_game_hit(m, mask))
            assert close(got["relevance-rank-accuracy"][s], relevance_rank_accuracy(m, mask))
    assert ev.extra["random"]["sparseness"].shape == (2, 5)
    assert not torch.equal(ev.extra["random"]["sparseness"][0], ev.extra["random"]["sparseness"][1])  # seeded maps
    assert 0.1 < float(ev.extra["gradcam@seq.5"]["relevance-rank-accuracy"].mean()) < 1.0


def test_explainer_call_metrics_equal_direct_calls_on_the_first_images(pair):
    model, x, _ = setup()
    ev = pair[1]
    xs = x[:N_EXPLAIN]
    assert "random-logit" not in ev.extra["random"]  # a baseline has no explainer
    for method, entry in (("gradcam", "gradcam@seq.5"), ("guided-backprop", "guided-backprop@input")):
        got = ev.extra[entry]
        for s in SEEDS:
            assert close(got["efficient-mprt"][s], efficient_mprt(model, xs, method, "seq.5", seed=s).rise)
            assert close(got["smooth-mprt"][s], smooth_mprt(model, xs, method, "seq.5", layerwise=False, seed=s).last)
            assert close(got["random-logit"][s], random_logit(model, xs, method, "seq.5", seed=s).similarity)
            assert close(got["max-sensitivity"][s], max_sensitivity(model, xs, method, "seq.5", seed=s))
        assert got["max-sensitivity"].shape == (2, N_EXPLAIN) and bool((got["max-sensitivity"] > 0).all())
    assert ev.config["extra_metrics"] == list(OPT_IN_METRICS) and ev.config["extra_images"] == N_EXPLAIN


def test_json_round_trip_table_and_html(pair, tmp_path):
    ev = pair[1]
    data = json.loads(ev.save_json(tmp_path / "evaluation.json").read_text())
    extra = data["extra"]
    assert list(extra["metrics"]) == list(OPT_IN_METRICS)
    assert extra["metrics"]["effective-complexity"] == {"label": "Eff. complexity (px)", "higher_is_better": False}
    assert extra["metrics"]["efficient-mprt"]["higher_is_better"] is True
    for e, by_metric in ev.extra.items():
        for name, t in by_metric.items():
            assert extra["per_seed_means"][e][name] == pytest.approx(t.double().mean(dim=1).tolist(), nan_ok=True)
    rows = {(r["entry"], r["metric"]): r for r in extra["summary"]}
    r = rows[("gradcam@seq.5", "max-sensitivity")]
    assert r["n"] == N_EXPLAIN and r["low"] <= r["mean"] <= r["high"]
    assert r["mean"] == pytest.approx(float(ev.extra["gradcam@seq.5"]["max-sensitivity"].double().mean()))
    assert rows[("random", "sparseness")]["n"] == 5 and ("random", "smooth-mprt") not in rows
    assert data["verdict"] == pair[0].to_dict()["verdict"]  # the verdict weighs only the default metrics
    text = ev.table()
    assert "Opt-in metrics (not weighed by the verdict) on 5 images" in text
    line = [ln for ln in text.splitlines() if ln.startswith("random ")][-1]  # the opt-in table's random row
    assert line.split()[-1] == "-"
    assert "Sparseness (Gini) ^" in text and "Max-sensitivity v" in text
    html = ev.html(figures=False)
    assert "More metrics (opt-in)" in html and "Eff. complexity (px) ↓" in html


def test_without_extra_metrics_the_output_is_unchanged(pair):
    plain, extra = pair
    assert plain.extra == {} and "extra" not in plain.to_dict()
    assert not any(k.startswith("extra") for k in plain.config) and "extra" not in plain.timings
    for e in plain.entries:
        for m, t in plain.values[e].items():
            assert torch.equal(t, extra.values[e][m]) or torch.equal(t.isnan(), extra.values[e][m].isnan())
    a, b = plain.to_dict(), extra.to_dict()
    for d in (a, b):
        del d["timings_s"]
        d["config"] = {k: v for k, v in d["config"].items() if not k.startswith("extra")}
    del b["extra"]
    assert json.dumps(a) == json.dumps(b)
    assert "Opt-in" not in plain.table() and "opt-in" not in plain.html(figures=False)


def test_unknown_names_and_metrics_without_an_object():
    model, x, _ = setup()
    with pytest.raises(InputError, match=r"no metric 'mprt'; choose from all, sparseness, effective-complexity"):
        evaluate(model, x, methods=["gradcam"], extra_metrics=["sparseness", "mprt"])
    ev = evaluate(model, x, methods=["gradcam"], layers=["seq.5"], baselines=["random"], objects=None, steps=2,
                  sanity=False, n_boot=50, extra_metrics=["pointing-game-hit", "sparseness"])  # fmt: skip
    assert list(ev.extra["gradcam@seq.5"]) == ["sparseness"]
    assert ev.config["extra_skipped"] == [["*", "pointing-game-hit", "no object known (pass objects= or --objects)"]]
    assert "pointing-game-hit left out for *: no object known" in ev.table()


def test_cli_extra_metrics_flag(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", ConvNet().eval(), {"architecture": "convnet"})
    out = tmp_path / "ev"
    base = ["evaluate", str(ckpt), "--methods", "gradcam", "--layers", "seq.4", "--n-images", "3", "--seeds", "0",
            "--steps", "2", "--no-sanity", "--sanity-images", "2", "--no-figures", "--no-progress", "--out", str(out)]
    assert main([*base, "--extra-metrics", "sparseness", "random-logit"]) == 0
    printed = capsys.readouterr().out
    assert "Opt-in metrics" in printed and "Random-logit SSIM v" in printed
    data = json.loads((out / "evaluation.json").read_text())
    assert data["config"]["extra_metrics"] == ["sparseness", "random-logit"] and data["config"]["extra_images"] == 2
    rows = {(r["entry"], r["metric"]): r["n"] for r in data["extra"]["summary"]}
    assert rows == {("gradcam@seq.4", "sparseness"): 3, ("gradcam@seq.4", "random-logit"): 2,
                    ("random", "sparseness"): 3, ("intensity", "sparseness"): 3, ("edge", "sparseness"): 3}
    assert main(base) == 0
    assert "Opt-in" not in capsys.readouterr().out
    assert "extra" not in json.loads((out / "evaluation.json").read_text())
    with pytest.raises(SystemExit):
        main([*base, "--extra-metrics", "mprt"])
    assert "invalid choice: 'mprt'" in capsys.readouterr().err
