"""docs/methods_table.md is what docs/make_methods_table.py makes from the registry today."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from camlens.methods import FAMILIES, METHODS

ROOT = Path(__file__).resolve().parents[2]


def load_generator():
    spec = importlib.util.spec_from_file_location("make_methods_table", ROOT / "docs" / "make_methods_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_table_matches_the_registry() -> None:
    made = load_generator().render()
    committed = (ROOT / "docs" / "methods_table.md").read_text(encoding="utf-8")
    assert committed == made, "docs/methods_table.md is stale: run PYTHONPATH=src python docs/make_methods_table.py"


def test_every_method_has_one_row_with_its_families() -> None:
    rows = [line for line in load_generator().render().splitlines() if line.startswith("| `")]
    assert len(rows) == len(METHODS)
    for row, (name, cls) in zip(rows, sorted(METHODS.items()), strict=True):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == f"`{name}`" and cells[1] == cls.__name__
        assert [f for f, cell in zip(FAMILIES, cells[2:7], strict=True) if cell == "yes"] == list(cls.families)
    legrad = next(r for r in rows if r.startswith("| `legrad`"))
    assert "| - | yes | - | - | - |" in legrad  # ViTs only
