"""Fixtures for tests/windows: the cached mingw build (skips without the toolchain)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def win_build():
    from hil.deploy import windows_build

    if shutil.which(windows_build.CC) is None:
        pytest.skip(f"mingw-w64 is not installed (apt-get install -y {windows_build.APT_PACKAGES})")
    return windows_build.build_all()
