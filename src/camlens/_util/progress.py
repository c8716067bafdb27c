"""One progress bar: tqdm when it is installed, a one-time hint and no bar when it is not."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["progress_bar"]

_hinted = False


def progress_bar(total: int | None, desc: str, *, enabled: bool = True, **kwargs: Any) -> Any:
    """A ``tqdm`` bar on stderr, or ``None`` when disabled or tqdm is missing.

    Callers do ``if bar is not None: bar.update(n)`` and close it when done.
    Extra keyword arguments go to ``tqdm`` (``unit=``, ``unit_scale=``, ...).
    """
    global _hinted
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if not _hinted:
            print("(progress bars need tqdm: pip install 'camlens[cli]')", file=sys.stderr)
            _hinted = True
        return None
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(total=total, desc=desc, **kwargs)
