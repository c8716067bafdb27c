"""One module per ``camlens`` sub-command; see :data:`camlens.cli.COMMANDS`."""
