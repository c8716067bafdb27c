"""The installed version, read once from the package metadata (pyproject.toml is its one source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION = version("camlens")
except PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "0+unknown"
