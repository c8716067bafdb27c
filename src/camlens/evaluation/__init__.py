"""Faithfulness and sanity evaluation of methods and layers: run -> result -> verdict -> render.

:func:`evaluate` runs it (:mod:`camlens.evaluation.run`), :class:`Evaluation`
holds the data and the statistics (:mod:`camlens.evaluation.result`),
:class:`Verdict` says which method to use (:mod:`camlens.evaluation.verdict`),
:func:`recommend` does both for a model and data (:mod:`camlens.evaluation.specs`),
and :mod:`camlens.evaluation.render` turns it into a table, JSON, figures and HTML.
"""

from camlens.evaluation.result import METRICS, Evaluation, bootstrap_ci
from camlens.evaluation.run import evaluate
from camlens.evaluation.specs import recommend
from camlens.evaluation.verdict import Verdict

__all__ = ["METRICS", "Evaluation", "Verdict", "bootstrap_ci", "evaluate", "recommend"]
