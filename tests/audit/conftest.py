"""A small explained run to audit: the tutorial's ConvNet (untrained, seeded) on 300 Fashion-MNIST test items,
explained with Grad-CAM and HiResCAM at seq.4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import camlens
from camlens.audit import AuditReport
from camlens.demo.models import build_model


@pytest.fixture(scope="session")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_model("convnet").eval()
    out = tmp_path_factory.mktemp("small-run") / "maps"
    camlens.explain_dataset(model, "fashion-mnist:test", out, methods=["gradcam", "hirescam"], layers=["seq.4"],
                            limit=300, shard_size=128, device="cpu", progress=False)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def small_audit(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> AuditReport:
    return camlens.audit(small_run, tmp_path_factory.mktemp("small-audit") / "audit", method="hirescam")
