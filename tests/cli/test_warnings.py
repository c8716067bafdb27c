"""Every warning raised while a command runs prints as one line, ``camlens CMD: warning: ...``: camlens' own as they
are, another library's with its category and module; the override ends with the command."""

from __future__ import annotations

import warnings

import pytest

from camlens.cli import main

NOISY = '''
import warnings

import torch
from torch import nn


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        warnings.warn("this call is deprecated;\\n    use another one", UserWarning)
        warnings.warn_explicit("generated code warns", RuntimeWarning, "/nowhere/generated.py", 7)
        return self.head(self.conv(x).mean(dim=(2, 3)))


def build():
    torch.manual_seed(0)
    return Noisy()
'''


@pytest.fixture
def noisy(tmp_path, monkeypatch):
    (tmp_path / "noisy_thirdparty.py").write_text(NOISY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "noisy_thirdparty:build"


def test_another_librarys_warnings_print_as_one_line_naming_category_and_source(noisy, capsys):
    before = warnings.showwarning, list(warnings.filters)
    assert main(["layers", noisy, "--input-shape", "3,8,8"]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert sorted(set(lines)) == [
        "camlens layers: warning: generated code warns (RuntimeWarning from /nowhere/generated.py:7)",
        "camlens layers: warning: this call is deprecated; use another one (UserWarning from noisy_thirdparty)",
    ]
    assert "warnings.warn(" not in err  # not Python's format, which prints the source line under the message
    assert (warnings.showwarning, list(warnings.filters)) == before  # restored when the command ends


def test_the_python_api_leaves_the_warning_display_alone(noisy, recwarn):
    import torch

    import camlens
    from camlens.sources import load_model

    shown = warnings.showwarning
    model, _ = load_model(noisy, "cpu")
    camlens.GradCAM(model, "conv")(torch.rand(1, 3, 8, 8))
    assert warnings.showwarning is shown
    raised = {str(w.message) for w in recwarn}
    assert raised >= {"this call is deprecated;\n    use another one", "generated code warns"}
