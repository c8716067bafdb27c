"""`camlens explain` and `camlens evaluate` outputs: checked before any work, one writer, write errors said plainly."""

from __future__ import annotations

import errno

import pytest

import camlens.viz.explained
from camlens._util.files import prepare_output_folder, writing
from camlens._util.lock import folder_lock
from camlens.cli import main
from camlens.errors import CamlensError, FolderBusyError, InputError

MODEL, DATA = "testmodels:small_resnet", "testmodels:rgb32_dataset"


def _explain(out):
    return ["explain", MODEL, "--data", DATA, "--index", "0", "1", "--out", str(out), "--device", "cpu"]


def _evaluate(out):
    return ["evaluate", MODEL, "--data", DATA, "--n-images", "4", "--seeds", "0", "--methods", "gradcam",
            "--steps", "2", "--no-sanity", "--no-figures", "--out", str(out), "--device", "cpu"]  # fmt: skip


@pytest.mark.parametrize("argv", [_explain, _evaluate], ids=["explain", "evaluate"])
def test_an_out_that_is_a_file_fails_before_any_work(argv, tmp_path, capsys, monkeypatch):
    target = tmp_path / "taken"
    target.write_text("mine")
    monkeypatch.setattr("camlens.sources.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(argv(target)) == 1
    err = capsys.readouterr().err
    assert f"InputError: --out {target} is an existing file, not a folder" in err
    assert target.read_text() == "mine"


@pytest.mark.parametrize("argv", [_explain, _evaluate], ids=["explain", "evaluate"])
def test_a_second_writer_on_one_out_is_refused(argv, tmp_path, capsys):
    with folder_lock(tmp_path, "camlens test"):
        assert main(argv(tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"FolderBusyError: {tmp_path} is being written by process" in err and "camlens test" in err


def test_an_evaluate_out_in_the_data_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from PIL import Image

    photos = tmp_path / "photos"
    (photos / "cat").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(photos / "cat" / "a.png")
    monkeypatch.setattr("camlens.sources.load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    for out in (photos, photos / "cat" / "ev"):
        argv = ["evaluate", MODEL, str(photos), "--out", str(out), "--device", "cpu"]
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"InputError: --out {out} is inside the data folder {photos}: its curves.png would be read" in err
    assert sorted(p.name for p in photos.rglob("*")) == ["a.png", "cat"]  # nothing created, no lock file


def test_a_full_disk_while_writing_figures_is_a_camlens_error(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "grid.png"))

    monkeypatch.setattr(camlens.viz.explained, "write_figures", full)
    monkeypatch.setattr("camlens.cli.explain.atomic_write_bytes", full)
    assert main(_explain(tmp_path)) == 1
    err = capsys.readouterr().err
    assert f"CamlensError: cannot write grid.png in {tmp_path}: the disk is full" in err
    assert "the files written before it are complete" in err and "Traceback" not in err


def test_writing_names_the_cause_and_what_was_kept(tmp_path):
    with pytest.raises(CamlensError) as e, writing(tmp_path, "the old results stay"):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "evaluation.json"))
    assert str(e.value) == (f"cannot write evaluation.json in {tmp_path}: permission denied; the old results stay; "
                            "nothing is half-written")  # fmt: skip
    assert not isinstance(e.value, (InputError, FolderBusyError))


def test_prepare_output_folder_creates_and_probes(tmp_path):
    out = prepare_output_folder(tmp_path / "a" / "b", "--out")
    assert out.is_dir() and list(out.iterdir()) == []
