"""Qualification runs: profiles, the run itself, its history and its report (``hil qualify``)."""
