"""The verdict: ranking against the model-free baselines, the recommendation, skipped methods, objects, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import camlens
from camlens.cli import main
from camlens.demo.models import ConvNet
from camlens.evaluation import Evaluation, evaluate
from camlens.evaluation.specs import load_boxes

N = 40


def synthetic(means: dict[str, dict[str, float]], spread: float = 0.01) -> Evaluation:
    """An evaluation whose per-image values are ``mean + spread * noise`` (the same noise for every entry)."""
    noise = torch.randn(1, N, generator=torch.Generator().manual_seed(0))
    values = {e: {m: torch.full((1, N), v) + spread * noise for m, v in ms.items()} for e, ms in means.items()}
    curves = {e: {} for e in means}
    config = {"seeds": [0], "model_name": "Net", "n_images": N, "steps": 4, "road_noise": 0.01,
              "skipped": [("cam", "LayerShapeError: no linear head")]}  # fmt: skip
    return Evaluation(list(means), values, curves, torch.zeros(5), torch.zeros(3), {}, config, n_boot=500)


def base(d: float, i: float, r: float) -> dict[str, float]:
    return {"deletion": d, "insertion": i, "road": r}


def test_the_method_that_beats_every_baseline_is_recommended():
    ev = synthetic({
        "gradcam@l": base(0.10, 0.50, -0.05),   # better deletion, worse insertion and ROAD than random
        "hirescam@l": base(0.05, 0.80, 0.40),   # better on all three against every baseline
        "random": base(0.30, 0.55, 0.00),
        "intensity": base(0.20, 0.60, 0.10),
    })  # fmt: skip
    v = ev.verdict()
    assert v.recommended == ("hirescam", "l")
    assert next(r.entry for r in v.ranking) == "hirescam@l"
    grad = next(r for r in v.ranking if r.entry == "gradcam@l")
    assert grad.against["random"] == {"deletion": "better", "insertion": "worse", "road": "worse"}
    assert not grad.beats_baselines and not grad.beats("random")
    assert "loses to random on insertion, ROAD" in grad.describe()
    text = v.text()
    assert "use hirescam at l" in text and "skipped cam: LayerShapeError: no linear head" in text
    assert v.to_dict()["recommended"] == ["hirescam", "l"]
    # mean ranks: hirescam is first on all three metrics
    assert next(r for r in v.ranking if r.entry == "hirescam@l").mean_rank == 1.0


@pytest.mark.parametrize("entry", ["fullgrad@fullgrad", "guided-backprop@input"])
def test_a_method_whose_map_has_no_layer_is_recommended_without_one(entry):
    ev = synthetic({entry: base(0.05, 0.80, 0.40), "random": base(0.30, 0.55, 0.00)})
    method = entry.partition("@")[0]
    assert ev.verdict().headline.startswith(f"For Net, use {method}: it beats every model-free baseline (random;")


def test_no_recommendation_when_no_method_beats_the_baselines():
    ev = synthetic({"gradcam@l": base(0.10, 0.50, -0.05), "random": base(0.30, 0.55, 0.00)})
    v = ev.verdict()
    assert v.recommended is None
    assert v.headline.startswith("No method beats the model-free baselines (random) on Net")


def test_an_undecided_metric_does_not_stop_a_win_but_a_loss_does():
    ev = synthetic({"a@l": base(0.10, 0.55, 0.20), "random": base(0.30, 0.55, 0.00)})  # insertion equal: undecided
    assert ev.verdict().recommended == ("a", "l")
    ev = synthetic({"a@l": base(0.10, 0.54, 0.20), "random": base(0.30, 0.55, 0.00)})
    assert ev.verdict().recommended is None


def no_pool_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


def test_methods_that_cannot_apply_are_skipped_with_one_line_and_photos_get_no_pointing_game():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # no zero background
    ev = evaluate(no_pool_model(), x, methods=["cam", "gradcam"], layers=["1"], steps=4, sanity=False, n_boot=100)
    assert ev.entries == ["gradcam@1", "random", "intensity", "edge"]
    [(method, reason)] = ev.config["skipped"]
    assert method == "cam" and "\n" not in reason and reason
    assert "pointing" not in ev.metrics and ev.config["objects"].startswith("none")
    assert "skipped cam:" in ev.table()
    with_objects = evaluate(no_pool_model(), x, methods=["gradcam"], layers=["1"], steps=4, sanity=False, n_boot=100,
                            objects=torch.ones(6, 8, 8, dtype=torch.bool))  # fmt: skip
    assert torch.allclose(with_objects.values["gradcam@1"]["pointing"], torch.ones(1, 6))  # the whole image: 1.0


def test_a_layer_the_model_does_not_have_is_an_error_not_every_method_skipped():
    from camlens.errors import LayerNotFoundError

    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.raises(LayerNotFoundError, match=r"no layer 'nope' in"):  # was: a verdict over the baselines alone
        evaluate(no_pool_model(), x, methods=["cam", "gradcam"], layers=["nope"], steps=2, sanity=False, n_boot=20)


def test_the_default_methods_do_not_fail_on_the_tutorial_model():
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    ev = evaluate(model, x, layers=["seq.4"], baselines=["random"], steps=2, road_percentages=(0.5,), sanity=False,
                  n_boot=50)  # fmt: skip
    skipped = dict(ev.config["skipped"])
    assert "cam" in skipped  # the tutorial's flatten -> linear head has no pooling for CAM
    assert len(ev.entries) >= 10 and "hirescam@seq.4" in ev.entries


def test_recommend_returns_the_verdict_of_an_evaluation():
    x = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    v = camlens.recommend(no_pool_model(), x, methods=["gradcam", "hirescam"], layers=["1"], steps=4, n_boot=100)
    assert {r.entry for r in v.ranking} == {"gradcam@1", "hirescam@1", "random", "intensity", "edge"}
    assert v.recommended is None or v.recommended[0] in ("gradcam", "hirescam")
    assert v.text().startswith("Verdict: ") and "8 images" in v.text()


def test_boxes_files_in_json_and_csv(tmp_path):
    js = tmp_path / "boxes.json"
    js.write_text(json.dumps({"3": [[0, 0, 2, 2]], "7": [[1, 1, 3, 4], [0, 3, 1, 4]]}))
    cs = tmp_path / "boxes.csv"
    cs.write_text("index,x0,y0,x1,y1\n3,0,0,2,2\n7,1,1,3,4\n7,0,3,1,4\n")
    a, b = load_boxes(js, [7, 3], (4, 4)), load_boxes(cs, [7, 3], (4, 4))
    assert a.equal(b) and int(a[0].sum()) == 6 + 1 and int(a[1].sum()) == 4
    with pytest.raises(camlens.errors.InputError, match=r"no box for items \[5\]"):
        load_boxes(js, [5], (4, 4))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(camlens.errors.DataError, match="is not JSON"):
        load_boxes(tmp_path / "bad.json", [1], (4, 4))


def build_convnet() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet()


def test_cli_takes_data_as_an_argument_and_ends_with_the_verdict(tmp_path, capsys):
    out = tmp_path / "ev"
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps({str(i): [[4, 4, 20, 20]] for i in range(60000)}))
    rc = main(["evaluate", f"{__file__}:build_convnet", "fashion-mnist:train", "--methods", "gradcam", "cam",
               "--layers", "seq.4", "--n-images", "3", "--seeds", "0", "--steps", "2", "--no-sanity",
               "--objects", str(boxes), "--no-progress", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and printed.rstrip().splitlines()[-1].startswith("Verdict: ")
    assert "skipped cam:" in printed and "1. " in printed
    data = json.loads((out / "evaluation.json").read_text())
    assert data["verdict"]["skipped"][0]["method"] == "cam" and data["config"]["objects"] == "given masks"
    page = (out / "evaluation.html").read_text()
    assert "camlens evaluation of " in page and "build_convnet" in page and 'class="verdict' in page
    assert page.index("Verdict:") < page.index("Deletion AUC")


def test_progress_bars_over_methods_images_and_sanity_checks(capsys):
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    evaluate(no_pool_model(), x, methods=["gradcam"], layers=["1"], steps=2, road_percentages=(0.5,), n_boot=50,
             sanity_images=2, progress=True)  # fmt: skip
    err = capsys.readouterr().err
    assert "maps (methods)" in err and "1/1" in err
    assert "metrics, seed 0 (images)" in err and "5/5" in err
    assert "sanity checks" in err and "2/2" in err  # one method x two modes x one seed
