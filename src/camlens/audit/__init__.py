"""Audit a whole explain-dataset run: which classes the model decides from the wrong place, and an
explorer to look (see docs/audit.md).

``audit(results, out, method=..., layer=...)`` writes ``out/audit.json``, per-class figures and
``out/index.html``.
"""

from camlens.audit.run import AuditReport, audit, choose_map

__all__ = ["AuditReport", "audit", "choose_map"]
