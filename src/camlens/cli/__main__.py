"""``python -m camlens.cli`` (and ``torchrun -m camlens.cli``) runs the command line."""

from camlens.cli import main

raise SystemExit(main())
