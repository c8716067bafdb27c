"""The guide's Python examples (docs/guide.md) run as written (issue 14, item 6).

Every ```python block is taken from the page and executed unchanged. The
torchvision detection and segmentation examples are complete programs; the
shorter fragments use names the page's prose defines (``model``, ``x``,
``layer``, ``vit``, ``swin``, ``cam``), which the test supplies: a small Hugging Face
ViT, timm's ViT-Ti/16 and Swin-T (random weights). A line of the form
``something.shape  # (a, b, c)`` is checked against its comment.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import timm
import torch

import camlens
from beyond_models import hf_vit

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
BLOCKS = re.findall(r"```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), flags=re.S)
SHAPE_LINE = re.compile(r"^(?P<expr>[\w.\[\]\"']+\.shape)\s+#\s*(?P<shape>\([\d, ]+\))", re.M)


#: what the fragments' names stand for, built only for the blocks that use them
FIXTURES = {
    "model": lambda: hf_vit(),
    "x": lambda: torch.rand(2, 3, 32, 32),
    "layer": lambda: "vit.layers.0",
    "vit": lambda: timm.create_model("vit_tiny_patch16_224", pretrained=False).eval(),
    "swin": lambda: timm.create_model("swin_tiny_patch4_window7_224", pretrained=False).eval(),
}


def _names(code: str) -> dict:
    torch.manual_seed(0)
    names: dict = {"camlens": camlens, "torch": torch}
    for name, build in FIXTURES.items():
        if re.search(rf"\b{name}\b", code):
            names[name] = build()
    if re.search(r"\bcam\(", code) and "cam = " not in code:
        names["cam"] = camlens.GradCAM(names.setdefault("model", hf_vit()))
        names.setdefault("x", torch.rand(2, 3, 32, 32))
    return names


def test_the_guide_has_its_examples() -> None:
    joined = "\n".join(BLOCKS)
    assert len(BLOCKS) >= 6
    assert "fasterrcnn_mobilenet_v3_large_320_fpn" in joined and "deeplabv3_mobilenet_v3_large" in joined
    assert '"backbone.2"' not in joined  # the old example's layer, which a torchvision detector does not have


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_guide_example_runs_as_written(index: int) -> None:
    code = BLOCKS[index]
    names = _names(code)
    exec(compile(code, f"{GUIDE.name}[block {index}]", "exec"), names)
    checked = 0
    for m in SHAPE_LINE.finditer(code):
        assert tuple(eval(m["expr"], names)) == ast.literal_eval(m["shape"]), m.group(0)
        checked += 1
    if "result = " in code:
        result = names["result"]
        assert torch.isfinite(result.map).all() and result.map.min() >= 0 and result.map.max() <= 1
        assert checked or "result.map.shape" not in code
