"""The public ``windows_guest`` pytest fixture: a real Windows guest under libvirt, for labs
(re-exported by :mod:`hil.pytest_plugin`)::

    def test_on_real_windows(windows_guest, win_build):
        t = windows_guest.transport                      # WinRM: run_cmd, run_ps, put, read_file
        deploy.install_driver(t, win_build["hilagent.sys"], "hilagent")

The image is ``HIL_WINDOWS_IMAGE`` or ``[windows] image`` in hil.toml (built as described in
guests/windows/README.md), the WinRM account ``[windows] winrm_user``/``winrm_password`` (or
``HIL_WINDOWS_USER``/``HIL_WINDOWS_PASSWORD``).  No Windows image can be had on the development
hosts, so there the fixture skips with the reason.  Each test gets its own overlay of the image;
the guest must have test signing on (unsigned drivers would not load) and gets a ``C:\\hil``
folder; a bug check during the test fails it at teardown.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NO_IMAGE = (
    "no Windows image configured (set HIL_WINDOWS_IMAGE or [windows] image in hil.toml; "
    "see guests/windows/README.md to build one)"
)


def configured_image(windows_config) -> str:
    """The lab's Windows image: ``HIL_WINDOWS_IMAGE``, else ``[windows] image`` ("" = none)."""
    return os.environ.get("HIL_WINDOWS_IMAGE", "") or windows_config.image


@pytest.fixture
def windows_guest(hil_config, tmp_path):
    image = configured_image(hil_config.windows)
    if not image:
        pytest.skip(NO_IMAGE)
    if not Path(image).is_file():
        pytest.skip(f"configured Windows image {image} does not exist")
    cfg = hil_config.windows
    user = cfg.winrm_user or os.environ.get("HIL_WINDOWS_USER", "hil")
    password = cfg.winrm_password or os.environ.get("HIL_WINDOWS_PASSWORD", "")
    if not password:
        pytest.skip("no WinRM password configured (HIL_WINDOWS_PASSWORD or [windows] winrm_password)")
    from hil.provision.accel import choose_accel
    from hil.windows import deploy
    from hil.windows.guest import WindowsLabGuest

    with WindowsLabGuest(
        Path(image),
        tmp_path,
        user=user,
        password=password,
        accel=choose_accel(hil_config.accel),
        uri=hil_config.libvirt_uri,
        memory_mib=cfg.memory_mib,
        vcpus=cfg.vcpus,
        boot_timeout=cfg.boot_timeout_s,
    ) as g:
        deploy.require_testsigning(g.transport)
        g.transport.mkdir(r"C:\hil")
        yield g
        if (bugcheck := g.bugcheck()) is not None:
            pytest.fail(f"the Windows guest bug-checked: {bugcheck}", pytrace=False)
