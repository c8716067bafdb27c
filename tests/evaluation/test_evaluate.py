"""The evaluation driver: agreement with the metric functions, statistics, outputs and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from camlens._util.lock import LOCK_NAME
from camlens.cli import main
from camlens.demo.checkpoint import save_checkpoint
from camlens.demo.models import ConvNet
from camlens.errors import InputError
from camlens.evaluation import Evaluation, bootstrap_ci, evaluate
from camlens.metrics import deletion, random_map, road


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.seq = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seq(x)


@pytest.fixture(scope="module")
def small_eval() -> tuple[nn.Module, torch.Tensor, Evaluation]:
    model = Tiny().eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ev = evaluate(model, x, methods=["gradcam"], layers=["seq.0", "seq.2"], seeds=(0, 1), steps=4, sanity_images=3,
                  n_boot=200)
    return model, x, ev


def test_entries_and_values_agree_with_the_metric_functions(small_eval):
    model, x, ev = small_eval
    assert ev.entries == ["gradcam@seq.0", "gradcam@seq.2", "random", "intensity", "edge"]
    assert ev.values["random"]["deletion"].shape == (2, 6)
    for seed in (0, 1):
        direct = deletion(model, x, random_map(x, seed), steps=4, seed=seed).auc
        assert torch.allclose(ev.values["random"]["deletion"][seed], direct)
        rd = road(model, x, random_map(x, seed), seed=seed)
        assert torch.allclose(ev.values["random"]["road"][seed], rd.score)
    assert ev.curves["edge"]["deletion"].shape == (5,)
    assert ev.sanity["gradcam@seq.2"]["cascading"]["spearman"].shape == (2, 3, 3)  # seeds, layers, images


def test_the_default_layer_is_the_automatic_choice():
    from camlens.core.autolayer import choose_layer

    model = Tiny().eval()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    ev = evaluate(model, x, methods=["gradcam"], baselines=["random"], steps=2, sanity=False, n_boot=50)
    chosen = choose_layer(model, x)
    assert ev.config["layers"] == [chosen]
    assert ev.entries == [f"gradcam@{chosen}", "random"]


def test_summary_and_comparisons_use_paired_per_image_differences():
    n = 50
    base = torch.linspace(0.2, 0.8, n)
    values = {
        "a": {m: (base - 0.1).expand(1, n) for m in ("deletion", "insertion", "road", "road_morf", "road_lerf",
                                                     "average_drop", "increase", "pointing")},
        "random": {m: base.expand(1, n) for m in ("deletion", "insertion", "road", "road_morf", "road_lerf",
                                                  "average_drop", "increase", "pointing")},
    }  # fmt: skip
    ev = Evaluation(["a", "random"], values, {}, torch.empty(0), torch.empty(0), {}, {"seeds": [0]}, n_boot=300)
    comp = {r["metric"]: r for r in ev.comparisons("random")}
    # The images differ a lot, but every paired difference is exactly -0.1: the interval is a point.
    assert comp["deletion"]["difference"] == pytest.approx(-0.1)
    assert (comp["deletion"]["low"], comp["deletion"]["high"]) == (pytest.approx(-0.1), pytest.approx(-0.1))
    assert comp["deletion"]["verdict"] == "better"  # lower deletion is better
    assert comp["insertion"]["verdict"] == "worse"  # lower insertion is worse
    summary = {(r["entry"], r["metric"]): r for r in ev.summary()}
    assert summary[("random", "deletion")]["mean"] == pytest.approx(0.5)


def test_bootstrap_interval_has_the_normal_width():
    v = torch.tensor([0.0, 1.0]).repeat(200)  # mean 0.5, sd 0.5, n 400: half-width 1.96 * 0.025 = 0.049
    lo, hi = bootstrap_ci(v, n_boot=4000, seed=0)
    assert lo == pytest.approx(0.451, abs=0.01) and hi == pytest.approx(0.549, abs=0.01)
    assert bootstrap_ci(torch.full((10,), 0.3)) == (pytest.approx(0.3), pytest.approx(0.3))


def test_bootstrap_interval_is_the_percentiles_of_resampled_means():
    v = torch.rand(57, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)  # the draws bootstrap_ci makes for seed 7
    means = v[torch.randint(57, (500, 57), generator=gen)].mean(dim=1)
    q = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64))
    for _ in range(2):  # the second call reuses the first call's draws
        lo, hi = bootstrap_ci(v, n_boot=500, seed=7)
        assert lo == pytest.approx(float(q[0]), abs=1e-12) and hi == pytest.approx(float(q[1]), abs=1e-12)
    assert bootstrap_ci(v, n_boot=500, seed=8) != (lo, hi)


def test_outputs_json_figures_html(small_eval, tmp_path):
    _, _, ev = small_eval
    text = ev.table()
    assert "gradcam@seq.2" in text and "Difference to the random map" in text and "Spearman" in text
    path = ev.save_json(tmp_path / "out" / "evaluation.json")
    data = json.loads(path.read_text())
    assert data["config"]["seeds"] == [0, 1]
    assert {r["entry"] for r in data["summary"]} == set(ev.entries)
    assert [p.name for p in tmp_path.joinpath("out").iterdir()] == ["evaluation.json"]  # no temp file left
    frag = ev.html()
    assert frag.startswith('<section class="camlens-evaluation">') and frag.endswith("</section>")
    assert frag.count("data:image/png;base64,") == 2
    paths = ev.save_figures(tmp_path / "figs")
    assert [p.read_bytes()[:4] for p in paths] == [b"\x89PNG", b"\x89PNG"]


def test_evaluate_rejects_bad_arguments():
    model, x = Tiny().eval(), torch.rand(2, 1, 8, 8)
    with pytest.raises(InputError, match="training mode"):
        evaluate(Tiny().train(), x)
    with pytest.raises(InputError, match="no method 'gradkam'"):
        evaluate(model, x, methods=["gradkam"])
    with pytest.raises(InputError, match="baselines"):
        evaluate(model, x, methods=["gradcam"], baselines=["noise"])
    with pytest.raises(InputError, match="seeds"):
        evaluate(model, x, methods=["gradcam"], seeds=[])


def test_cli_evaluate_writes_json_figures_and_html(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "ckpt", ConvNet().eval(), {"architecture": "convnet"})
    out = tmp_path / "ev"
    rc = main([
        "evaluate", str(ckpt), "--methods", "gradcam", "--layers", "seq.4", "--n-images", "3",
        "--seeds", "0", "--steps", "2", "--sanity-images", "2", "--out", str(out),
    ])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert "gradcam@seq.4" in printed and "wrote" in printed
    written = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)  # the folder lock file stays
    assert written == ["curves.png", "evaluation.html", "evaluation.json", "sanity.png"]
    assert json.loads((out / "evaluation.json").read_text())["config"]["n_images"] == 3
    cfg = json.loads((out / "evaluation.json").read_text())["config"]
    assert cfg["checkpoint"] == cfg["model"] == str(ckpt) and cfg["architecture"] == "convnet"
    assert cfg["data"] == "fashion-mnist:test" and cfg["accuracy_on_images"] is not None
    rc = main(["evaluate", str(ckpt), "--n-images", "100000", "--out", str(out)])
    assert rc == 1
    assert "n_images=100000" in capsys.readouterr().err


def test_an_input_sized_method_is_one_entry_scored_on_its_channel_mean():
    from camlens.methods import get_method

    model = Tiny().eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    ev = evaluate(model, x, methods=["guided-backprop", "gradcam"], layers=["seq.2"], baselines=["random"],
                  steps=4, sanity_images=2, sanity_modes=("cascading",), n_boot=50)
    assert ev.entries == ["guided-backprop@input", "gradcam@seq.2", "random"]
    gb = get_method("guided-backprop")(model)(x).maps["input"]  # (N, 1, H, W)
    direct = deletion(model, x, gb[:, 0], steps=4, seed=0).auc
    assert torch.allclose(ev.values["guided-backprop@input"]["deletion"][0], direct)
    assert ev.sanity["guided-backprop@input"]["cascading"]["layers"] == ["seq.5", "seq.2", "seq.0"]


def test_fullgrad_is_scored_on_its_map_from_every_bias_layer_not_the_evaluated_layer():
    from camlens.evaluation.run import collect_maps
    from camlens.methods import FullGrad
    from camlens.metrics.sanity import image_map

    torch.manual_seed(0)
    model = ConvNet().eval()  # convolutions with biases in seq.0, seq.2 and seq.4
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    maps, explained = collect_maps(model, x, ["fullgrad"], ["seq.4"], 2)
    assert explained == [("fullgrad", "fullgrad")]
    every = image_map(FullGrad(model)(x).maps["fullgrad"])
    torch.testing.assert_close(maps["fullgrad@fullgrad"], every, atol=0, rtol=0)
    inside = image_map(FullGrad(model, "seq.4")(x).maps["fullgrad"])
    assert float((every - inside).abs().max()) > 0.05  # the evaluated layer's biases alone: another map


def build_convnet() -> nn.Module:
    torch.manual_seed(0)
    return ConvNet()


def test_cli_evaluate_takes_a_factory_a_data_spec_and_the_split_shorthand(tmp_path, capsys):
    from camlens.cli.evaluate import data_spec, evaluate_spec

    assert data_spec(None, None) == "fashion-mnist:test"
    assert data_spec(None, "train") == data_spec("fashion-mnist:test", "train") == "fashion-mnist:train"
    with pytest.raises(InputError, match="--split train applies to Fashion-MNIST"):
        data_spec("mypkg:build", "train")
    ev = evaluate_spec(f"{__file__}:build_convnet", "fashion-mnist:train", n_images=4, device="cpu",
                       methods=["gradcam"], layers=["seq.4"], baselines=["random"], steps=2, sanity=False, n_boot=20)
    cfg = ev.config
    assert cfg["model"].endswith(":build_convnet") and cfg["checkpoint"] is None and cfg["architecture"] is None
    assert cfg["data"] == "fashion-mnist:train" and 0.0 <= cfg["accuracy_on_images"] <= 1.0
    out = tmp_path / "ev"
    rc = main(["evaluate", f"{__file__}:build_convnet", "--split", "train", "--methods", "gradcam", "--layers",
               "seq.4", "--n-images", "2", "--seeds", "0", "--steps", "2", "--no-sanity", "--no-figures",
               "--out", str(out)])  # fmt: skip
    assert rc == 0 and "gradcam@seq.4" in capsys.readouterr().out
    data = json.loads((out / "evaluation.json").read_text())
    assert data["config"]["data"] == "fashion-mnist:train" and data["config"]["device"] in ("cpu", "cuda:0", "mps:0")
