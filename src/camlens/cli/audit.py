"""``camlens audit``: findings and an explorer from what ``camlens explain-dataset`` wrote."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Audit with a map that is faithful for the model (camlens evaluate says which): Grad-CAM can miss a "
        "shortcut that HiResCAM shows. Open OUT/index.html in a browser (no server needed). See docs/audit.md."
    )
    parser.add_argument("results", help="the output folder of `camlens explain-dataset`")
    parser.add_argument("--out", required=True, help="the audit's folder (audit.json, figures, index.html)")
    parser.add_argument("--method", default=None, help="the method whose maps to audit (default: the run's only one)")
    parser.add_argument("--layer", default=None, help="the layer whose maps to audit (default: the run's only one)")
    parser.add_argument(
        "--reason",
        default=None,
        help="why this map, recorded in audit.json (e.g. the evaluation's verdict); default 'user' when "
        "--method/--layer are given",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="the explained data, as explain-dataset's --data (default: the data the results name); the images "
        "tell the object from the background and make the thumbnails",
    )
    parser.add_argument("--no-images", action="store_true", help="do not read the images (nothing is flagged then)")
    parser.add_argument("--no-explorer", action="store_true", help="write audit.json and the figures only")
    parser.add_argument("--seed", type=int, default=0, help="the clustering's seed (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from camlens.audit import audit

    data = False if args.no_images else args.data
    report = audit(args.results, args.out, data=data, method=args.method, layer=args.layer, reason=args.reason,
                   explorer=not args.no_explorer, seed=args.seed)  # fmt: skip
    print(report)
    return 0
