"""camlens.demo."""
