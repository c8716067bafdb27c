"""`camlens demo` and its report against hostile checkpoints and folders, busy or full output folders."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import camlens.viz.explained
from camlens._util.lock import folder_lock
from camlens.cli import main
from camlens.demo import run as run_module
from camlens.demo.checkpoint import load_checkpoint
from camlens.demo.report import write_report
from camlens.demo.train import train
from camlens.errors import CamlensError
from camlens.viz.html import page

TINY = ["--epochs", "1", "--train-limit", "64", "--val-limit", "100", "--eval-images", "0", "--wrong", "0",
        "--no-progress", "--device", "cpu"]  # fmt: skip
SAMPLE = Path(camlens.viz.explained.__file__).parents[1] / "demo" / "data" / "sample"
XSS = "<img src=x onerror=alert(1)>"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def quick_figures(monkeypatch):
    """One tiny PNG per explained image instead of matplotlib's figures (their cost is not under test here)."""

    def write_figures(ex, class_names, out, cmap="jet", dpi=100):
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{name}.png" for name in ex.names] + [out / "grid.png"]
        for p in paths:
            p.write_bytes(_png())
        return paths

    monkeypatch.setattr(camlens.viz.explained, "write_figures", write_figures)


def test_write_report_escapes_history_summary_captions_and_class_names(tmp_path):
    script = "1<script>alert(1)</script>"
    path = write_report(
        tmp_path / "r.html", title=f"t{XSS}", summary=[f"source {XSS}"],
        history=[{"epoch": script, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": 0.5}],
        per_class=[0.5], class_names=[XSS], figures=[(f"caption {XSS}", _png())], sections=[f"text {script}"],
    )  # fmt: skip
    html = path.read_text()
    assert "<script" not in html and "<img src=x" not in html
    assert "<td>1&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
    # <title> and <h1>, the summary line, the figure's alt text and its caption (class names are drawn, not written)
    assert html.count("&lt;img src=x onerror=alert(1)&gt;") == 5
    assert page("x").count("<") == page("x").count(">")  # the renderer itself is sane


def test_demo_report_escapes_the_data_source(tmp_path, quick_figures):
    data = tmp_path / XSS  # a folder name: the one free-text value of a checkpoint that reaches the report
    shutil.copytree(SAMPLE, data)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", str(data), *TINY]) == 0
    html = (out / "report.html").read_text()
    assert "<img src=x" not in html and f"{tmp_path}/&lt;img src=x onerror=alert(1)&gt;" in html
    assert len(re.findall(r"<img ", html)) == len(re.findall(r'<img alt="[^"<>]*" src="data:image/png;base64,', html))


def test_demo_refuses_a_checkpoint_with_a_tampered_history(tmp_path, capsys, quick_figures):
    out = tmp_path / "demo"
    train(checkpoint=out / "checkpoint", epochs=1, train_limit=64, val_limit=100, seed=0, progress=False, log=None,
          device="cpu")  # the configuration TINY asks for: the demo would reuse it  # fmt: skip
    meta_path = out / "checkpoint" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["history"][0]["epoch"] = "1<script>alert(1)</script>"
    meta_path.write_text(json.dumps(meta))
    assert main(["demo", "--out", str(out), *TINY]) == 0
    text = capsys.readouterr().out
    assert f"not reusing {out / 'checkpoint'}: checkpoint {out / 'checkpoint'}: meta.json field 'history' = " in text
    assert "training the tutorial's ConvNet" in text
    html = (out / "report.html").read_text()
    assert "<script" not in html and "<td>1</td>" in html


def test_demo_out_that_is_a_file_fails_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_module, "_trained", lambda *a, **k: pytest.fail("work started before the check"))
    a_file = tmp_path / "out"
    a_file.write_text("mine")
    assert main(["demo", "--out", str(a_file), *TINY]) == 1
    assert f"InputError: --out {a_file} is an existing file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "mine"


def test_a_second_demo_on_one_folder_gets_folder_busy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_module, "_trained", lambda *a, **k: pytest.fail("work started in a busy folder"))
    out = tmp_path / "demo"
    with folder_lock(out, "camlens demo"):
        assert main(["demo", "--out", str(out), *TINY]) == 1
    err = capsys.readouterr().err
    assert f"FolderBusyError: {out} is being written by process {os.getpid()} on" in err and "(camlens demo," in err


def test_a_full_disk_while_writing_the_report_keeps_the_checkpoint_and_says_so(tmp_path, monkeypatch, quick_figures):
    real_trained = run_module._trained

    def trained_then_full(*args, **kwargs):
        found = real_trained(*args, **kwargs)

        def fsync(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", fsync)  # from here on, every atomic write fails
        return found

    monkeypatch.setattr(run_module, "_trained", trained_then_full)
    out = tmp_path / "demo"
    with pytest.raises(CamlensError) as info:
        run_module.run_demo(out, **dict(epochs=1, train_limit=64, val_limit=100, eval_images=0, wrong=0),
                            progress=False, device="cpu", log=lambda line: None)  # fmt: skip
    monkeypatch.undo()
    message = str(info.value)
    expected = f"could not write the demo's figures or report in {out}: No space left on device (ENOSPC)"
    assert message.startswith(expected)
    assert f"kept: the just trained checkpoint in {out / 'checkpoint'}" in message
    assert not (out / "report.html").exists()
    assert load_checkpoint(out / "checkpoint")[1]["epochs"] == 1
