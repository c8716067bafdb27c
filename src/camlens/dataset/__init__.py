"""Dataset-scale explanation: batched, resumable shards, spread over ranks with torchrun.

``explain_dataset(model, data, out, ...)`` writes the shards and the manifest;
``open_results(out)`` reads them back lazily. See ``docs/dataset.md``.
"""

from camlens.dataset.driver import STATS, RunSummary, explain_dataset, parse_targets
from camlens.dataset.manifest import MANIFEST
from camlens.dataset.reader import Item, Results, open_results

__all__ = ["MANIFEST", "STATS", "Item", "Results", "RunSummary", "explain_dataset", "open_results", "parse_targets"]
