"""What the Windows suites share beyond the plugin's public fixtures (``mingw``, ``win_build``,
``wine_guest``, ``wine_driver``, ``windows_guest``: see :mod:`hil.wine.pytest_fixtures` and
:mod:`hil.windows.pytest_fixtures`)."""

from __future__ import annotations

import socket

import pytest


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a driver's listening/connecting port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
