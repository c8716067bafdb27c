"""The documentation site builds in strict mode, and its API reference is generated from the docstrings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict_renders_the_api_reference(tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"

    # the existing pages are in the site
    for page in ("demo", "engine", "methods", "evaluation", "guide", "dataset"):
        assert (site / page / "index.html").is_file(), page

    # the reference is rendered from the docstrings, not written by hand
    methods = (site / "api" / "methods" / "index.html").read_text(encoding="utf-8")
    assert 'id="camlens.methods.GradCAM"' in methods
    assert "GradCAM" in methods and "Grad-CAM" in methods
    metrics = (site / "api" / "metrics" / "index.html").read_text(encoding="utf-8")
    assert 'id="camlens.metrics.deletion"' in metrics
    assert 'id="camlens.metrics.energy_pointing_game"' in metrics
    top = (site / "api" / "camlens" / "index.html").read_text(encoding="utf-8")
    assert 'id="camlens.GradCAM"' in top and 'id="camlens.explain_dataset"' in top
