"""Fixtures for the Windows suites.

Under Wine (always available where ``wine64`` and mingw-w64 are installed):
``win_build`` builds every driver and tool once (cached by source hash), ``wine_guest`` is a
fresh Wine prefix per test whose DbgPrint log becomes the test's artifact; a driver crash in
the prefix fails the test at teardown.

Lab only: ``windows_image`` names the configured Windows image (``HIL_WINDOWS_IMAGE`` or
``[windows] image`` in hil.toml) and skips with the reason when there is none.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from hil.errors import HilError

WINE_TOOLS = ("hilsvc.exe", "hilagentctl.exe")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a driver's listening/connecting port)."""
    return _free_port()


@pytest.fixture(scope="session")
def win_build():
    """hil.deploy.windows_build.BuildResult with every driver and tool."""
    from hil.deploy import windows_build

    if shutil.which(windows_build.CC) is None:
        pytest.skip(f"mingw-w64 is not installed (apt-get install -y {windows_build.APT_PACKAGES})")
    try:
        return windows_build.build_all()
    except HilError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def wine_guest(request, win_build, tmp_path_factory):
    """A fresh Wine prefix with hilsvc.exe/hilagentctl.exe in C:\\hil, destroyed after the test."""
    if not (shutil.which("wine") or shutil.which("wine64")):
        pytest.skip("Wine is not installed (apt-get install -y wine64 wine)")
    from hil.wine import WineGuest

    try:
        artifacts = request.getfixturevalue("hil_artifacts") / "wine"
    except pytest.FixtureLookupError:
        artifacts = tmp_path_factory.mktemp("wine")
    guest = WineGuest(artifacts, tools={t: win_build[t] for t in WINE_TOOLS}, name="wine")
    try:
        guest.boot()
        yield guest
    finally:
        guest.destroy()
        request.node.user_properties.append(("wine_debug_log", str(guest.debug_log)))
    if guest.crashed():
        pytest.fail(f"a driver crashed in the Wine prefix: see {guest.debug_log}")


@pytest.fixture(scope="session")
def windows_image(request):
    """Path of the lab's Windows image, or skip: no Windows image can be had on these hosts."""
    image = os.environ.get("HIL_WINDOWS_IMAGE", "")
    if not image:
        try:
            image = request.getfixturevalue("hil_config").windows.image
        except (pytest.FixtureLookupError, HilError, AttributeError):
            image = ""
    if not image:
        pytest.skip("no Windows image configured (set HIL_WINDOWS_IMAGE or [windows] image in "
                    "hil.toml; see guests/windows/README.md to build one)")
    if not Path(image).is_file():
        pytest.skip(f"configured Windows image {image} does not exist")
    return Path(image)
