"""camlens.core."""
