"""camlens.viz.figures."""
