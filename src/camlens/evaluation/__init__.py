"""Faithfulness and sanity evaluation of methods and layers: run -> result -> render.

:func:`evaluate` runs it (:mod:`camlens.evaluation.run`), :class:`Evaluation`
holds the data and the statistics (:mod:`camlens.evaluation.result`), and
:mod:`camlens.evaluation.render` turns it into a table, JSON, figures and HTML.
"""

from camlens.evaluation.result import METRICS, Evaluation, bootstrap_ci
from camlens.evaluation.run import evaluate

__all__ = ["METRICS", "Evaluation", "bootstrap_ci", "evaluate"]
