"""Pictures and pages: overlays and figures (:mod:`camlens.viz.figures`), image files
(:mod:`camlens.viz.images`) and the one escaping HTML renderer of every report (:mod:`camlens.viz.html`)."""
