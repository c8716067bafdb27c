"""The ``camlens`` command line.

Each sub-command lives in its own module under ``camlens.cli`` with two
functions, ``add_arguments(parser)`` and ``run(args) -> int``; the table
below is the only list of them, and a module is imported only when its
command runs, so ``camlens --help`` stays fast and optional extras load lazily.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from camlens._util.allocator import keep_freed_memory
from camlens._util.version import VERSION
from camlens.errors import CamlensError

__all__ = ["COMMANDS", "main"]

#: command name -> (module under camlens.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "train the tutorial's ConvNet on the bundled Fashion-MNIST sample and explain it"),
    "train": ("train", "train a model on Fashion-MNIST and write a checkpoint"),
    "explain": ("explain", "explain a model's predictions on dataset items or image files, with figures"),
    "evaluate": ("evaluate", "faithfulness and sanity metrics for methods and layers"),
    "explain-dataset": ("explain_dataset", "explain a whole dataset into resumable shards (torchrun-ready)"),
    "audit": ("audit", "find the classes a model decides from the wrong place; an explorer of the maps"),
    "layers": ("layers", "list a model's candidate layers with their output shapes"),
    "methods": ("methods", "list the registered CAM methods"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="camlens", description="Where a PyTorch model looks.")
    parser.add_argument("--version", action="version", version=f"camlens {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


_PACKAGE = Path(__file__).resolve().parent.parent


def _source(filename: str, lineno: int) -> str:
    """The module a warning came from (``torch.nn.modules.module``), else its ``file:line``."""
    for name, module in list(sys.modules.items()):
        if getattr(module, "__file__", None) == filename:
            return name
    return f"{filename}:{lineno}"


@contextmanager
def _plain_warnings(name: str) -> Iterator[None]:
    """Every warning as one line, ``camlens NAME: warning: ...``, not Python's ``file:line: UserWarning`` and source
    line: camlens' own as they are, another library's (torch, timm, PIL, ...) with ``(Category from module)``.

    The override lives for one command (``catch_warnings`` restores ``showwarning`` and the filters), so the
    Python API never changes the global warning state.
    """

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:  # fmt: skip
        text = " ".join(str(message).split())  # one line, whatever the message holds
        if not Path(filename).resolve().is_relative_to(_PACKAGE):
            text = f"{text} ({category.__name__} from {_source(filename, lineno)})"
        print(f"camlens {name}: warning: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] not in COMMANDS:
        top.parse_args(argv or ["--help"])
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(f"camlens.cli.{COMMANDS[name][0]}")
    parser = argparse.ArgumentParser(prog=f"camlens {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    # intermixed: positionals may follow options (`camlens evaluate MODEL --weights none DATA`)
    args = parser.parse_intermixed_args(rest)
    keep_freed_memory()  # this process is ours: reuse freed CPU memory (camlens._util.allocator)
    try:
        with _plain_warnings(name):
            return int(module.run(args) or 0)
    except CamlensError as e:
        print(f"camlens {name}: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"camlens {name}: interrupted", file=sys.stderr)
        return 130

