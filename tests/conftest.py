"""Fixtures for every test. Shared models live in testmodels.py, not here."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
