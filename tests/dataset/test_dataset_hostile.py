"""explain-dataset against hostile results folders, changed data, a second writer, full disks and bad input."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import camlens
from camlens._util.lock import folder_lock
from camlens.cli import main
from camlens.dataset import driver, open_results
from camlens.dataset import folder as folder_mod
from camlens.dataset import shards as shards_mod
from camlens.dataset.reader import Results
from camlens.dataset.stats import ClassStats
from camlens.dataset.writer import items_hash
from camlens.demo.models import ConvNet
from camlens.errors import DataError, FolderBusyError, InputError

N, SHARD, BATCH = 12, 5, 3  # shards of 5, 5 and 2 items


class Images(Dataset):
    """``n`` seeded 28x28 images and labels, in memory, changeable in place."""

    def __init__(self, n: int = N, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, 28, 28, generator=g)
        self.y = torch.arange(n) % 10

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


@pytest.fixture(scope="module")
def model() -> ConvNet:
    torch.manual_seed(0)
    return ConvNet().eval()


def run(model, data, out, **kw) -> camlens.dataset.RunSummary:
    args = {"layers": ["seq.4"], "shard_size": SHARD, "batch_size": BATCH, "progress": False, **kw}
    return camlens.explain_dataset(model, data, out, **args)


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}


@pytest.fixture(scope="module")
def done(tmp_path_factory, model) -> Path:
    out = tmp_path_factory.mktemp("done")
    run(model, Images(), out)
    return out


def altered(done: Path, tmp_path: Path, change) -> Path:
    """A copy of the finished run with its manifest changed by ``change(manifest)``."""
    out = tmp_path / "res"
    shutil.copytree(done, out)
    manifest = json.loads((out / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


# --- every file a manifest or record names stays inside the folder, is regular, and is read bounded ---


def test_a_shard_file_outside_the_folder_is_refused_even_with_a_matching_sha256(done, tmp_path):
    shutil.copy(done / "shard-000000.safetensors", tmp_path / "x.safetensors")  # same bytes, same sha256
    out = altered(done, tmp_path, lambda m: m["shards"][0].update(file="../x.safetensors"))
    with pytest.raises(DataError) as e:
        open_results(out)
    assert str(e.value).startswith(f"{out / 'manifest.json'}: shards[0] has file='../x.safetensors'; expected ")
    assert "'shard-000000.safetensors', a file inside the folder" in str(e.value)
    for bad in ("/dev/zero", str(tmp_path / "x.safetensors"), "shard-000000.safetensors/..", 7, None):
        out2 = altered(done, tmp_path / str(abs(hash(str(bad)))), lambda m, b=bad: m["shards"][0].update(file=b))
        with pytest.raises(DataError, match=r"shards\[0\] has file="):
            open_results(out2)


def test_a_link_out_of_the_folder_and_a_fifo_are_refused_before_reading(done, tmp_path):
    out = altered(done, tmp_path, lambda m: None)
    (tmp_path / "outside.safetensors").write_bytes((out / "shard-000001.safetensors").read_bytes())
    (out / "shard-000001.safetensors").unlink()
    (out / "shard-000001.safetensors").symlink_to(tmp_path / "outside.safetensors")
    results = open_results(out)
    assert results[0].id == 0
    with pytest.raises(DataError, match=r"shard 1 file in .* is 'shard-000001.safetensors', which leads outside"):
        results[SHARD]
    (out / "shard-000001.safetensors").unlink()
    os.mkfifo(out / "shard-000001.safetensors")  # reading it would hang
    with pytest.raises(DataError, match=r"is 'shard-000001.safetensors', which is not a regular file"):
        open_results(out).verify()


def test_the_size_is_checked_before_reading_and_a_lying_header_is_a_data_error(done, tmp_path):
    out = altered(done, tmp_path, lambda m: None)
    path = out / "shard-000002.safetensors"
    with open(path, "ab") as f:
        f.write(b"\0" * 1000)
    size = r"sha256 not computed, as it is \d+ bytes where the record says \d+; rerun the same"
    with pytest.raises(DataError, match=r"shard-000002.safetensors is corrupt: " + size):
        open_results(out).verify()
    # a header that lies about its offsets, with the sha256 and size the manifest promises (written by the same hand)
    header = json.dumps({"ids": {"dtype": "I64", "shape": [10**9], "data_offsets": [0, 8 * 10**9]}}).encode()
    blob = len(header).to_bytes(8, "little") + header + b"\0" * 16
    path.write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    out2 = altered(out, tmp_path / "b", lambda m: m["shards"][2].update(sha256=digest, bytes=len(blob)))
    with pytest.raises(DataError, match=r"shard-000002.safetensors is not a valid safetensors file"):
        open_results(out2).verify()
    # a valid safetensors file that holds other rows than the record's
    blob = shards_mod._st().save({"ids": torch.arange(3)})
    (out2 / "shard-000002.safetensors").write_bytes(blob)
    digest = hashlib.sha256(blob).hexdigest()
    out3 = altered(out2, tmp_path / "c", lambda m: m["shards"][2].update(sha256=digest, bytes=len(blob)))
    with pytest.raises(DataError, match=r"does not hold this run's results: 'ids' is shaped \(3,\), expected 2 rows"):
        open_results(out3)[11]


def test_the_statistics_file_named_by_the_manifest_stays_inside(done, tmp_path):
    (tmp_path / "secret.json").write_text("{}")
    out = altered(done, tmp_path, lambda m: m.update(stats="../secret.json"))
    with pytest.raises(DataError, match=r"manifest.json stats in .* is '../secret.json', which leads outside"):
        open_results(out).stats()


def test_a_shard_record_naming_another_file_is_redone_not_read(model, tmp_path):
    data = Images()
    out = tmp_path / "out"
    run(model, data, out)
    before = shard_bytes(out)
    record = json.loads((out / "shard-000001.json").read_text())
    (tmp_path / "x.safetensors").write_bytes((out / "shard-000001.safetensors").read_bytes())
    (out / "shard-000001.json").write_text(json.dumps({**record, "file": "../x.safetensors"}))
    again = run(model, data, out)
    assert (again.shards_computed, again.shards_skipped) == (1, 2)
    assert shard_bytes(out) == before
    assert [r["file"] for r in open_results(out).manifest["shards"]][1] == "shard-000001.safetensors"


# --- malformed manifests: a DataError naming the field, never a traceback ---


def _twice(m):
    m["shards"][1] = dict(m["shards"][0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(shard_size=0), "shard_size is 0; expected an int >= 1"),
        (lambda m: m.update(shard_size="5"), "shard_size is '5'; expected an int >= 1"),
        (lambda m: m.update(shards=None), "shards is None; expected a list of 3 shard records"),
        (lambda m: m.update(n_items=-1), "n_items is -1; expected an int >= 0"),
        (lambda m: m.update(n_shards=2), "n_shards is 2; expected 3 (n_items 12 / shard_size 5)"),
        (lambda m: m.update(config=None), "config is None; expected an object"),
        (lambda m: m.update(map_keys=["a", "a"]), "map_keys is ['a', 'a']; expected a list of distinct"),
        (lambda m: m["shards"].pop(1), "shards is 'a list of 2 records'; expected 3: shard(s) [1] are missing"),
        (_twice, "shards[1].index is 0; expected each shard once (shards[0] is shard 0 too)"),
        (lambda m: m["shards"][0].update(index=True), "shards[0].index is True; expected a shard index in 0..2"),
        (lambda m: m["shards"][2].update(sha256=5), "shards[2] has sha256=5; expected a str"),
        (lambda m: m["shards"][2].update(bytes=-4), "shards[2] has start=10, stop=12, bytes=-4"),
        (lambda m: m["shards"][1].update(start=0), "shards[1] start..stop is (0, 10); expected (5, 10)"),
        (lambda m: m["shards"].__setitem__(0, "x"), "shards[0].index is None; expected a shard index"),
    ],
)
def test_malformed_manifests_name_the_field(done, tmp_path, change, message):
    out = altered(done, tmp_path, change)
    with pytest.raises(DataError) as e:
        open_results(out)
    assert f"{out / 'manifest.json'}: " in str(e.value) and message in str(e.value)
    assert "rerun the same explain-dataset command to rewrite it" in str(e.value)
    manifest = json.loads((out / "manifest.json").read_text())
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        Results(out, manifest).verify()  # never a Results whose verify() passes


def test_a_manifest_that_is_not_a_regular_file_or_too_big_is_refused(done, tmp_path):
    out = altered(done, tmp_path, lambda m: None)
    (out / "manifest.json").unlink()
    os.mkfifo(out / "manifest.json")
    with pytest.raises(DataError, match=r"manifest.json in .* is 'manifest.json', which is not a regular file"):
        open_results(out)


# --- content-aware resume: changed data is refused, never mixed ---


def test_changed_data_with_the_same_count_is_refused_and_nothing_is_mixed(model, tmp_path):
    data, out = Images(), tmp_path / "out"
    run(model, data, out)
    before = shard_bytes(out) | {"manifest.json": (out / "manifest.json").read_bytes()}
    data.x.copy_(Images(seed=1).x)  # other images, same count, same --data
    with pytest.raises(DataError) as e:
        run(model, data, out)
    assert str(e.value).startswith(f"the data changed since {out} was written: items 0..2 of shard 0 are not")
    assert "(3 finished shard(s) differ); nothing was mixed or computed. Use a new output folder" in str(e.value)
    assert shard_bytes(out) | {"manifest.json": (out / "manifest.json").read_bytes()} == before
    # killed half way, then the data changed: the finished shard is not mixed with new ones
    half = tmp_path / "half"
    run(model, Images(), half)
    for name in ("shard-000001.json", "shard-000002.json", "shard-000001.safetensors", "shard-000002.safetensors"):
        (half / name).unlink()
    with pytest.raises(DataError, match=r"items 0..2 of shard 0 .* \(1 finished shard\(s\) differ\)"):
        run(model, data, half)
    assert sorted(p.name for p in half.glob("shard-*")) == ["shard-000000.json", "shard-000000.safetensors"]
    # the same data resumes as before
    assert run(model, data, tmp_path / "new").shards_computed == 3
    assert run(model, data, tmp_path / "new").shards_skipped == 3


def test_each_shard_records_the_sha256_of_the_items_it_explained(done):
    data = Images()
    results = open_results(done)
    for record in results.manifest["shards"]:
        h = hashlib.sha256()
        for lo in range(record["start"], record["stop"], BATCH):
            ids = range(lo, min(lo + BATCH, record["stop"]))
            items_hash(h, data.x[ids.start : ids.stop], data.y[ids.start : ids.stop])
        assert record["items_sha256"] == h.hexdigest()


# --- one writer per output folder ---


def test_a_second_writer_gets_folder_busy_and_touches_nothing(model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / ".shard-000000.safetensors.abcd1234.tmp"  # the other run's write in progress
    theirs.write_bytes(b"partial")
    with folder_lock(out, "camlens explain-dataset"), pytest.raises(FolderBusyError) as e:
        run(model, Images(), out)
    assert str(e.value).startswith(f"{out} is being written by process {os.getpid()} on ")
    assert "(camlens explain-dataset, since " in str(e.value) and "choose another output folder" in str(e.value)
    assert theirs.read_bytes() == b"partial" and not list(out.glob("shard-*"))
    # the lock is free again: our stale temporaries are swept, other files are not
    mine_too = out / ".manifest.json.zz_99xyz.tmp"
    mine_too.write_bytes(b"")
    others = [out / ".shard-000000.safetensors.user.tmp", out / "notes.tmp"]
    for p in others:
        p.write_bytes(b"keep")
    run(model, Images(), out)
    assert not theirs.exists() and not mine_too.exists() and all(p.read_bytes() == b"keep" for p in others)


def test_under_torchrun_the_other_ranks_stop_when_rank_0_could_not_lock(monkeypatch, tmp_path):
    from contextlib import ExitStack

    monkeypatch.setattr(driver.D, "sum_ints", lambda values, device=None: [1, 0])  # rank 0 reported busy
    with pytest.raises(FolderBusyError, match=r"being written by another run \(rank 0 could not take its lock"):
        driver._lock_folder(ExitStack(), tmp_path, rank=1)
    monkeypatch.setattr(driver.D, "sum_ints", lambda values, device=None: [0, 1])
    with pytest.raises(DataError, match=r"rank 0 cannot write to the output folder .* nothing was computed"):
        driver._lock_folder(ExitStack(), tmp_path, rank=1)
    assert not (tmp_path / ".camlens.lock").exists()  # only rank 0 takes it


# --- repeated names and non-finite values ---


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"methods": ["gradcam", "gradcam"]}, "methods=['gradcam', 'gradcam'] names 'gradcam' more than once"),
        ({"layers": ["seq.4", "seq.2", "seq.4"]}, "layers=['seq.4', 'seq.2', 'seq.4'] names 'seq.4' more than once"),
    ],
)
def test_repeated_methods_or_layers_are_refused(model, tmp_path, kw, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        run(model, Images(), tmp_path, **kw)
    assert not list(tmp_path.glob("shard-*"))


@pytest.mark.parametrize("methods", [["fullgrad"], ["gradcam", "guided-backprop"]])
def test_methods_whose_map_is_the_inputs_are_refused_before_any_work(model, tmp_path, methods):
    free = methods[-1]
    out = tmp_path / "maps"
    said = rf"{free} explains the input pixels, not a layer's maps, and explain-dataset stores each method's maps"
    with pytest.raises(InputError, match=rf"{said} at its layers; .*get_method\('{free}'\)"):
        camlens.explain_dataset(model, Images(), out, methods=methods, progress=False)  # the automatic layer
    with pytest.raises(InputError, match=f"{free} explains the input pixels"):
        run(model, Images(), out, methods=methods)  # layers given
    assert not out.exists()


def test_non_finite_input_is_refused_naming_the_items_and_finished_shards_stay(model, tmp_path):
    data = Images()
    data.x[6, 0, 3, 3] = float("nan")
    data.x[7, 0, 0, 0] = float("-inf")
    with pytest.raises(DataError) as e:
        run(model, data, tmp_path)
    assert str(e.value).startswith("item(s) 6, 7 of the data hold NaN or infinite values; ")
    assert "fix or leave out these items" in str(e.value)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-000000.json", "shard-000000.safetensors"]


def test_non_finite_maps_are_counted_apart_from_all_zero_maps():
    maps = torch.ones(4, 2, 2)
    maps[1] = 0.0
    maps[2, 0, 0] = float("nan")
    maps[3, 1, 1] = float("inf")
    inside = torch.tensor([0.5, float("nan"), float("nan"), float("nan")])
    shard = {"labels": torch.zeros(4, dtype=torch.long), "preds": torch.zeros(4, dtype=torch.long),
             "probs": torch.ones(4), "maps/g/l": maps, "inside/g/l": inside}  # fmt: skip
    stats = ClassStats(1, ["g/l"])
    stats.update(shard)
    row = stats.as_dict()["all"]["g/l"]
    assert row == {"mean_mass_inside": 0.5, "zero_maps": 1, "nonfinite_maps": 2}
    no_mask = ClassStats(1, ["g/l"])
    no_mask.update({k: v for k, v in shard.items() if not k.startswith("inside/")})
    assert no_mask.as_dict()["all"]["g/l"] == {"mean_mass_inside": None, "zero_maps": None, "nonfinite_maps": 2}


# --- write errors: checked before any work, and a camlens error that says what was kept ---


def test_an_out_that_is_a_file_or_cannot_be_written_is_refused_before_any_work(model, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    called = []
    monkeypatch.setattr(driver, "_open_model", lambda *a: called.append(a))
    with pytest.raises(DataError, match=r"out='.*file' is a file, not a folder; choose a folder for the results"):
        run(model, Images(), tmp_path / "file")
    with pytest.raises(DataError, match=r"cannot write to the output folder .*file/sub: .*\(ENOTDIR\); nothing"):
        run(model, Images(), tmp_path / "file" / "sub")

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(folder_mod, "open", denied, raising=False)
    with pytest.raises(DataError, match=r"output folder .*ro: Permission denied \(EACCES\); nothing was computed"):
        run(model, Images(), tmp_path / "ro")
    assert called == []
    rc = main(["explain-dataset", "--model", "x:y", "--out", str(tmp_path / "file"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("camlens explain-dataset: error: DataError: out=") and "Traceback" not in err


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_is_refused_on_the_command_line_before_any_work(tmp_path, capsys, limit):
    out = tmp_path / "maps"
    rc = main(["explain-dataset", "--model", "x:y", "--out", str(out), "--limit", str(limit), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and err == (f"camlens explain-dataset: error: InputError: --limit {limit} must be 1 or more: the "
                               "number of items to explain; omit --limit to explain every item\n")  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize(("failing", "code"), [("shard-000001.json", errno.ENOSPC), ("manifest.json", errno.EACCES)])
def test_a_full_disk_or_denied_write_keeps_finished_shards_and_the_rerun_resumes(
    model, tmp_path, monkeypatch, failing, code
):
    data = Images()
    run(model, data, tmp_path / "ref")
    from camlens._util import files

    real_write = files.atomic_write_bytes
    calls = {"n": 0}

    def write(path, blob):
        if Path(path).name == failing and (failing != "manifest.json" or calls["n"] > 0):
            raise OSError(code, os.strerror(code))
        calls["n"] += Path(path).name == "manifest.json"
        return real_write(path, blob)

    for module in (shards_mod, camlens.dataset.manifest):
        monkeypatch.setattr(module, "atomic_write_bytes", write)
    with pytest.raises(DataError) as e:
        run(model, data, tmp_path / "out")
    why = {errno.ENOSPC: "the disk is full (ENOSPC)", errno.EACCES: "permission denied (EACCES)"}[code]
    kept = 1 if failing == "shard-000001.json" else 3
    assert str(e.value).startswith(f"cannot write {failing} in {tmp_path / 'out'}: {why}; nothing half-written")
    assert f"the {kept} finished shard(s) there stay valid, and rerunning the same command resumes" in str(e.value)
    monkeypatch.undo()
    again = run(model, data, tmp_path / "out")
    assert again.shards_skipped == kept and again.shards_computed == 3 - kept
    assert shard_bytes(tmp_path / "out") == shard_bytes(tmp_path / "ref")
    assert not list((tmp_path / "out").glob(".*.tmp"))
