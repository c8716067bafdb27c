"""explain_dataset / open_results in one process: stored values, resume, corruption, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import camlens
from camlens.dataset import open_results
from camlens.dataset.stats import mass_inside
from camlens.demo.data import FashionMNIST
from camlens.demo.models import ConvNet
from camlens.errors import DataError, InputError

N, SHARD, BATCH = 90, 40, 16  # batches (16) deliberately do not divide shards (40): the last batch of each is short


def make_model() -> ConvNet:
    """The demo ConvNet, seeded, with a head scaled so that maps are well inside float16's normal range."""
    torch.manual_seed(0)
    model = ConvNet()
    with torch.no_grad():
        model.seq[7].weight.mul_(300.0)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> ConvNet:
    return make_model()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model):
    out = tmp_path_factory.mktemp("run")
    summary = camlens.explain_dataset(
        model, "fashion-mnist:test", out, layers=["seq.2", "seq.4"], limit=N, shard_size=SHARD,
        batch_size=BATCH, progress=False,
    )  # fmt: skip
    assert (summary.shards_computed, summary.shards_skipped, summary.items_computed) == (3, 0, N)
    return out


def shard_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.safetensors"))}


def test_each_item_holds_the_engine_maps_probabilities_and_label(run_dir, model):
    x, labels = FashionMNIST(split="test").tensors()
    x, labels = x[:N], labels[:N]
    ref = camlens.GradCAM(model, ["seq.2", "seq.4"], upsample=False, normalize=False)(x)
    logits = model(x).detach().double()
    results = open_results(run_dir)
    assert len(results) == N and results.map_keys == ["gradcam/seq.2", "gradcam/seq.4"]
    for i in range(N):
        item = results[i]
        assert item.id == i and item.label == int(labels[i])
        pred = max(range(10), key=lambda c: float(logits[i, c]))
        assert item.pred == pred and int(item.targets) == pred
        p = math.exp(float(logits[i, pred])) / sum(math.exp(float(v)) for v in logits[i])
        assert float(item.probs) == pytest.approx(p, rel=1e-5)
        for layer in ("seq.2", "seq.4"):
            stored = item.maps[f"gradcam/{layer}"]
            assert stored.shape == (28, 28)
            # float16 storage: within half a float16 step of the engine's float32 map
            want = ref.raw[layer][i]
            torch.testing.assert_close(stored, want.half().float(), rtol=0, atol=1e-3 * float(want.max()))
    assert max(float(ref.raw["seq.4"].max()), float(ref.raw["seq.2"].max())) > 1e-2  # maps not in the subnormal range
    shard = open_results(run_dir).shard(0)
    assert shard["maps/gradcam/seq.4"].dtype == torch.float16 and shard["maps/gradcam/seq.4"].shape == (SHARD, 28, 28)
    # stored = the engine's maps for the same batches (16, 16, 8 items), rounded to float16
    cam = camlens.GradCAM(model, "seq.2", upsample=False, normalize=False)
    same_batches = torch.cat([cam(x[i : i + b]).raw["seq.2"] for i, b in ((0, 16), (16, 16), (32, 8))])
    assert torch.equal(shard["maps/gradcam/seq.2"], same_batches.half())


def test_mass_inside_hand_computed():
    maps = torch.tensor([[[[1.0, 3.0], [0.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    mask = torch.tensor([[[True, False], [False, True]], [[True, True], [True, True]]])
    got = mass_inside(maps, mask)
    assert got[0, 0].item() == pytest.approx(5 / 8)
    assert math.isnan(got[1, 0].item())  # a zero map has no mass to place: NaN, counted apart
    # a 1x1 map upsampled to 2x2 is constant: the mass inside is the object's share of the pixels
    one = mass_inside(torch.full((1, 1, 1, 1), 2.0), torch.tensor([[[True, False], [False, False]]]))
    assert one.item() == pytest.approx(0.25)


def test_class_statistics_match_a_plain_loop_over_the_items(run_dir):
    results = open_results(run_dir)
    stats = json.loads((run_dir / "class_stats.json").read_text())
    rest = {k: v for k, v in results.stats().items() if k != "fingerprint"}
    assert stats == {"fingerprint": results.manifest["fingerprint"], **rest}
    x, _ = FashionMNIST(split="test").tensors()
    for c in range(10):
        items = [results[i] for i in range(N) if results[i].label == c]
        row = stats["classes"].get(str(c))
        if not items:
            assert row is None
            continue
        assert row["n"] == len(items)
        assert row["mean_confidence"] == pytest.approx(sum(float(it.probs) for it in items) / len(items), rel=1e-6)
        assert row["accuracy"] == pytest.approx(sum(it.pred == c for it in items) / len(items))
        masses = []
        for it in items:
            m = it.maps["gradcam/seq.4"]  # already 28x28: mass from the stored values, by a loop
            obj = x[it.id, 0] != 0
            total = sum(float(m[r, s]) for r in range(28) for s in range(28))
            inside = sum(float(m[r, s]) for r in range(28) for s in range(28) if obj[r, s])
            masses.append(inside / total)
        assert row["gradcam/seq.4"]["mean_mass_inside"] == pytest.approx(sum(masses) / len(masses), rel=1e-4)
        assert row["gradcam/seq.4"]["zero_maps"] == 0


def test_reader_upsamples_on_request_and_names_bad_ids(run_dir):
    results = open_results(run_dir)
    small = results.map(41, "gradcam/seq.4")
    big = results.map(41, "gradcam/seq.4", size=(56, 56))
    torch.testing.assert_close(big, F.interpolate(small[None, None], size=(56, 56), mode="bilinear")[0, 0])
    stack = results.maps([0, 41, 89], "gradcam/seq.2", size=(14, 14), normalize=True)
    assert stack.shape == (3, 14, 14) and float(stack.amax(dim=(1, 2)).min()) == 1.0
    with pytest.raises(KeyError, match=r"item id 90 is not in this run: ids are 0..89"):
        results[90]
    with pytest.raises(KeyError, match="several maps per item"):
        results.map(0)


def test_rerun_skips_finished_shards_and_redoes_a_missing_one(tmp_path, model):
    kw = dict(limit=N, shard_size=SHARD, batch_size=BATCH, progress=False)
    camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, **kw)
    before = shard_bytes(tmp_path)
    again = camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, **kw)
    assert (again.shards_computed, again.shards_skipped, again.items_computed) == (0, 3, 0)
    (tmp_path / "shard-000001.json").unlink()  # as if killed between the shard's rename and its record's
    redo = camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, **kw)
    assert (redo.shards_computed, redo.items_computed) == (1, SHARD)
    assert shard_bytes(tmp_path) == before


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_shard_is_detected_by_the_reader_and_redone_by_a_resume(tmp_path, model, damage):
    kw = dict(limit=N, shard_size=SHARD, batch_size=BATCH, progress=False)
    camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, **kw)
    before = shard_bytes(tmp_path)
    path = tmp_path / "shard-000001.safetensors"
    blob = bytearray(path.read_bytes())
    if damage == "flip":
        blob[len(blob) // 2] ^= 0xFF
        blob[-3] ^= 0x01
    else:
        del blob[len(blob) - 100 :]
    path.write_bytes(bytes(blob))
    results = open_results(tmp_path)
    assert results[0].id == 0 and results[89].id == 89  # other shards are fine
    with pytest.raises(DataError, match=r"shard-000001.safetensors is corrupt: sha256 .* rerun the same"):
        results[SHARD + 1]
    with pytest.raises(DataError, match="corrupt"):
        results.verify()
    redo = camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, **kw)
    assert (redo.shards_computed, redo.shards_skipped) == (1, 2)
    assert shard_bytes(tmp_path) == before
    open_results(tmp_path).verify()


def test_changed_configuration_is_refused_with_what_changed(tmp_path, model):
    kw = dict(limit=N, shard_size=SHARD, progress=False)
    camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, batch_size=BATCH, **kw)
    with pytest.raises(DataError, match=r"another configuration \(batch_size: was 16, now 32\).*new output folder"):
        camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, batch_size=32, **kw)
    other = make_model()
    with torch.no_grad():
        other.seq[0].bias.add_(1.0)
    with pytest.raises(DataError, match="model: was"):
        camlens.explain_dataset(other, "fashion-mnist:test", tmp_path, batch_size=BATCH, **kw)


def test_top_k_targets_and_float32(tmp_path, model):
    camlens.explain_dataset(
        model, "fashion-mnist:test", tmp_path, targets="top-3", dtype="float32", limit=20, shard_size=8,
        batch_size=5, progress=False,
    )  # fmt: skip
    x, _ = FashionMNIST(split="test").tensors()
    # no layers given: the automatic choice on the first batch (items 0..4), the last ReLU (was the last conv, seq.4)
    assert camlens.choose_layer(model, x[:5]) == "seq.5"
    ref = camlens.GradCAM(model, "seq.5", upsample=False, normalize=False)(x[:20], top_k=3)
    results = open_results(tmp_path)
    assert results.config["layers"] == ["seq.5"]
    assert results.manifest["layer_choice"] == "automatic: camlens.choose_layer on items 0..4"
    for i in (0, 7, 8, 19):
        item = results[i]
        assert torch.equal(item.targets, ref.targets[i])
        assert item.maps["gradcam/seq.5"].shape == (3, 28, 28)
        torch.testing.assert_close(item.maps["gradcam/seq.5"], ref.raw["seq.5"][i], rtol=1e-5, atol=1e-6)
        assert bool((item.probs[:-1] >= item.probs[1:]).all())
        torch.testing.assert_close(item.probs, torch.softmax(ref.logits[i], 0)[ref.targets[i]], rtol=1e-5, atol=1e-7)


class Unlabelled(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.full((1, 28, 28), i / 10.0)


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_the_users_model_is_left_as_found_also_after_an_error(tmp_path):
    model = make_model().train()
    model.seq[0].eval()
    model.seq[2].weight.requires_grad_(False)
    model.seq[0].register_forward_hook(lambda *a: None)
    n_hooks = hooks(model)
    camlens.explain_dataset(model, Unlabelled(), tmp_path / "a", progress=False, batch_size=4)
    with pytest.raises(InputError, match="targets='label' but the dataset gives no labels"):
        camlens.explain_dataset(model, Unlabelled(), tmp_path / "b", targets="label", progress=False)
    assert model.training and not model.seq[0].training and model.seq[4].training
    assert not model.seq[2].weight.requires_grad and model.seq[0].weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert hooks(model) == n_hooks
    results = open_results(tmp_path / "a")
    assert results[3].label == -1 and results.stats()["classes"] == {}


def test_factories_and_an_image_folder(tmp_path):
    from PIL import Image  # in the dev extra

    for c, name in enumerate(["cat", "dog"]):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for j in range(3):
            arr = torch.zeros(28, 28, dtype=torch.uint8)
            arr[5 + j : 20, 8 + c : 22] = 200
            Image.fromarray(arr.numpy(), mode="L").convert("RGB").save(tmp_path / "imgs" / name / f"{j}.png")
    (tmp_path / "fac.py").write_text(
        "import torch\nfrom camlens.demo.models import ConvNet\n"
        "def model():\n    torch.manual_seed(1)\n    return ConvNet(in_channels=3, num_classes=2)\n"
    )
    camlens.explain_dataset(
        f"{tmp_path / 'fac.py'}:model", str(tmp_path / "imgs"), tmp_path / "out", targets="label", batch_size=4,
        shard_size=4, progress=False,
    )  # fmt: skip
    results = open_results(tmp_path / "out")
    assert [results[i].label for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert [int(results[i].targets) for i in range(6)] == [0, 0, 0, 1, 1, 1]
    assert results.config["model"]["kind"] == "factory" and results.config["object_mask"] is None
    assert results[0].inside == {}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"targets": "best"}, InputError, "targets='best' is not 'predicted', 'label', 'top-K'"),
        ({"methods": ["gradcamm"]}, InputError, "no method 'gradcamm'; did you mean gradcam"),
        ({"batch_size": 0}, InputError, "batch_size=0 must be an int >= 1"),
        ({"data": "fashion-mnist:val"}, InputError, "split 'val' is not one of"),
        ({"data": "nowhere/at/all"}, InputError, "data='nowhere/at/all' is not"),
        ({"model": "nowhere"}, InputError, "model='nowhere' is neither a checkpoint folder"),
        ({"model": "os:nothing_here"}, InputError, "'os' has no callable 'nothing_here'"),
        ({"dtype": "int8"}, InputError, "dtype='int8' is not one of"),
    ],
)
def test_bad_arguments_say_what_to_do(tmp_path, model, kwargs, error, message):
    args = {"model": model, "data": "fashion-mnist:test", **kwargs}
    with pytest.raises(error, match=message.replace("(", r"\(").replace("[", r"\[")):
        camlens.explain_dataset(args.pop("model"), args.pop("data"), tmp_path, limit=4, progress=False, **args)


def test_open_results_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(DataError, match=r"has no manifest.json"):
        open_results(tmp_path)
    with pytest.raises(DataError, match=rf"^{tmp_path / 'typo'} does not exist; give the output folder of "):
        open_results(tmp_path / "typo")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=rf"^{tmp_path / 'notes.txt'} is not a folder; give the output folder"):
        open_results(tmp_path / "notes.txt")
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "camlens-dataset/1", "complete": False}))
    with pytest.raises(DataError, match=r"is not finished.*rerun the same"):
        open_results(tmp_path)


def test_weights_fingerprint_covers_buffers_and_zero_dim_tensors():
    from camlens.sources import model_fingerprint

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))  # num_batches_tracked is a 0-d int64 buffer
    before = model_fingerprint(net)
    assert before == model_fingerprint(net)
    net[1].running_mean.add_(1e-3)
    assert model_fingerprint(net) != before


def test_maps_beyond_float16_are_refused_with_the_fix(tmp_path):
    model = make_model()
    with torch.no_grad():
        model.seq[7].weight.mul_(1e9)
    with pytest.raises(InputError, match=r"exceed the range of float16 .*\(--dtype float32\)"):
        camlens.explain_dataset(model, "fashion-mnist:test", tmp_path, limit=8, progress=False)
    assert not list(tmp_path.glob("shard-*"))
