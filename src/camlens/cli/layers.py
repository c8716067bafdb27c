"""``camlens layers``: a model's layers with output shapes, the candidates, and the automatic choice."""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from camlens._util.device import DEVICE_HELP
from camlens.errors import CamlensError, InputError

#: the largest input (values in one image) `camlens layers` allocates for its probe: 3 x 8192 x 8192.
MAX_INPUT_ELEMENTS = 3 * 8192 * 8192


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="a checkpoint folder (from `camlens train`), 'torchvision:NAME', 'timm:NAME', 'hf:ID', a "
        "save_pretrained folder, or 'package.module:function' / 'file.py:function' returning an nn.Module",
    )
    parser.add_argument("--weights", default=None, metavar="none|FILE",
                        help="'none' for random weights (zoo models), or a .safetensors / state-dict file")
    parser.add_argument(
        "--input-shape",
        default=None,
        help="one input's shape C,H,W (or C,L / C,D,H,W), e.g. 3,224,224; "
        "default: from the model's preprocessing (1,28,28 for the tutorial's ConvNet, 3,224,224 for most of the zoos)",
    )
    parser.add_argument("--all", action="store_true", help="list every submodule, not only the candidates")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        shape = ()
    if not 2 <= len(shape) <= 4 or min(shape) < 1:
        raise InputError(
            f"--input-shape {text!r} is not C,H,W (or C,L / C,D,H,W) with positive ints; e.g. --input-shape 3,224,224"
        )
    return shape


def load_model(spec: str, device: torch.device, weights: str | None = None) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The model named by ``spec`` (through :func:`camlens.sources.load_model`), and its input shape if known.

    The shape is the checkpoint's own, else the one the model's preprocessing produces (its crop, else a
    fixed resize), else unknown.
    """
    from camlens.sources import load_model as load_from_spec

    model, info = load_from_spec(spec, device, weights=weights)
    if info.get("kind") == "checkpoint":
        from camlens.demo.sources import checkpoint_input_shape

        return model, checkpoint_input_shape(spec)
    pre = info.get("preprocess")
    if pre is not None:
        hw = pre.crop if pre.crop is not None else pre.size
        if isinstance(hw, int):
            hw = (hw, hw)
        if hw is not None:
            return model, (pre.channels, *hw)
    return model, None


def run(args: argparse.Namespace) -> int:
    from camlens._util.device import select_device
    from camlens.cli._model_args import channels_as_flags
    from camlens.core.autolayer import choose_layer, scan_layers
    from camlens.core.wrapped import unwrap_model

    device = select_device(args.device)
    model, shape = load_model(args.model, device, getattr(args, "weights", None))
    model = unwrap_model(model)
    if args.input_shape is not None:
        shape = _parse_shape(args.input_shape)
    if shape is None:
        raise InputError(f"the input shape of {args.model!r} is unknown; pass --input-shape C,H,W (e.g. 3,224,224)")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise InputError(f"input shape {shape} has {math.prod(shape)} values, more than the {MAX_INPUT_ELEMENTS} "
                         "`camlens layers` probes with; pass a smaller --input-shape (e.g. 3,224,224)")
    x = torch.rand(1, *shape, device=device)
    with channels_as_flags(args, "pass --input-shape {n}," + ",".join(map(str, shape[1:])) + " (one input's shape)"):
        infos = scan_layers(model, x)
    try:
        chosen: str | None = choose_layer(model, x)
    except CamlensError:  # no candidate is a fact to print, not a failure
        chosen = None
    rows = [i for i in infos if args.all or i.spatial]
    print(f"input (1, {', '.join(map(str, shape))}); {len(rows)} of {len(infos)} layers shown")
    if rows:
        width = max(len(i.name) for i in rows)
        kind_w = max(len(i.kind) for i in rows)
        print(f"{'layer':<{width}}  {'type':<{kind_w}}  {'output':<18}  {'as maps':<18}  on path")
        for i in rows:
            maps = "-" if i.map_shape is None else str(tuple(i.map_shape[1:]))
            path = {True: "yes", False: "no", None: "-"}[i.on_path]
            path += " (flat: one value repeated)" if i.uniform else ""
            mark = "  <- auto" if i.name == chosen else ""
            print(f"{i.name:<{width}}  {i.kind:<{kind_w}}  {i.shape[1:]!s:<18}  {maps:<18}  {path}{mark}")
    print(f"automatic choice (layers=None): {chosen or 'none: pass layers='}")
    return 0
