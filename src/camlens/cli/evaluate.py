"""``camlens evaluate``: faithfulness and sanity metrics of methods and layers for a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint folder (from `camlens train` or save_checkpoint)")
    parser.add_argument(
        "--methods", nargs="+", default=None, help="registered method names (default: all; see `camlens methods`)"
    )
    parser.add_argument("--layers", nargs="+", default=None, help="layer names (default: the model's conv layers)")
    parser.add_argument("--n-images", type=int, default=500, help="test images to evaluate (default 500)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    parser.add_argument("--data", default=None, help="folder of Fashion-MNIST IDX files (default: the bundled sample)")
    parser.add_argument("--split", default="test", choices=["test", "train"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--no-sanity", action="store_true", help="skip the randomization sanity checks")
    parser.add_argument("--sanity-images", type=int, default=100, help="sanity-check images (default 100)")
    parser.add_argument("--out", default="evaluation", help="output folder (evaluation.json, figures, .html)")
    parser.add_argument("--no-figures", action="store_true", help="write only the JSON (no matplotlib needed)")


def run(args: argparse.Namespace) -> int:
    from camlens._util.files import atomic_write_bytes
    from camlens.errors import InputError
    from camlens.evaluation.run import evaluate_checkpoint

    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if args.sanity_images < 1:
        raise InputError(f"--sanity-images {args.sanity_images} must be at least 1 (or pass --no-sanity)")
    result = evaluate_checkpoint(
        args.checkpoint,
        n_images=args.n_images,
        data=args.data,
        split=args.split,
        device=args.device,
        methods=args.methods,
        layers=args.layers,
        seeds=args.seeds,
        steps=args.steps,
        batch_size=args.batch_size,
        sanity=not args.no_sanity,
        sanity_images=args.sanity_images,
    )
    print(result.table())
    out = Path(args.out)
    written = [result.save_json(out / "evaluation.json")]
    if not args.no_figures:
        written += result.save_figures(out)
        page = (
            "<!doctype html>\n<html><head><meta charset='utf-8'><title>camlens evaluation</title></head><body>\n"
            + result.html()
            + "\n</body></html>\n"
        )
        atomic_write_bytes(out / "evaluation.html", page.encode())
        written.append(out / "evaluation.html")
    print("\nwrote " + ", ".join(str(p) for p in written))
    return 0
