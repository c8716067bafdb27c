"""The house rules, checked on the source: imports point down, and no function or class grows too long."""

from __future__ import annotations

import ast
from pathlib import Path

import camlens

PACKAGE = Path(camlens.__file__).resolve().parent
GUESTS = ("demo", "cli")  # only these rooms (and each other) may import them


def _modules() -> list[tuple[str, Path, ast.Module]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path, ast.parse(path.read_text(), filename=str(path))))
    return found


def _imported(module: str, path: Path, tree: ast.Module) -> set[str]:
    """Every module name an import in ``tree`` names, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_parser_sees_relative_and_absolute_imports():
    tree = ast.parse("from ..demo import x\nimport camlens.cli\nfrom camlens import demo")
    seen = _imported("camlens.dataset.driver", PACKAGE / "dataset" / "driver.py", tree)
    assert {"camlens.demo", "camlens.demo.x", "camlens.cli"} <= seen


def test_nothing_outside_the_demo_and_the_cli_imports_them():
    offenders = []
    for module, path, tree in _modules():
        if module.split(".")[1:2] and module.split(".")[1] in GUESTS:
            continue
        for name in _imported(module, path, tree):
            if any(name == f"camlens.{g}" or name.startswith(f"camlens.{g}.") for g in GUESTS):
                offenders.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert offenders == []


def test_the_demo_does_not_import_the_command_line():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for module, path, tree in _modules()
        if module.startswith("camlens.demo")
        for name in _imported(module, path, tree)
        if name == "camlens.cli" or name.startswith("camlens.cli.")
    ]
    assert offenders == []


def test_no_function_over_80_lines_and_no_class_over_200():
    too_long = []
    for _, path, tree in _modules():
        for node in ast.walk(tree):
            limit = 200 if isinstance(node, ast.ClassDef) else 80
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    too_long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert too_long == []
