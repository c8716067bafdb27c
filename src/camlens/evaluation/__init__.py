"""camlens.evaluation."""
