"""``camlens methods``: the registered CAM methods, read from the registry."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the docs)")


def run(args: argparse.Namespace) -> int:
    from camlens.methods import METHODS

    rows = []
    for name, cls in sorted(METHODS.items()):
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append((name, cls.__name__, "yes" if cls.uses_gradients else "no", doc[0] if doc else ""))
    if args.markdown:
        print("| name | class | gradients | what |\n| --- | --- | --- | --- |")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        width = max(len(r[0]) for r in rows)
        for r in rows:
            print(f"{r[0]:<{width}}  {r[3]}")
    return 0
