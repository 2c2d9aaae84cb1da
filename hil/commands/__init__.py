"""One module per ``hil`` sub-command (see :mod:`hil.cli`)."""
