"""The public ``windows_guest`` pytest fixture: a real Windows guest under libvirt, for labs
(re-exported by :mod:`hil.pytest_plugin`)::

    def test_on_real_windows(windows_guest, win_build):
        windows_guest.deployer.install(win_build["hilagent.sys"], "hilagent", CollectorPort=port)
        windows_guest.deployer.start("hilagent")
        windows_guest.winrm.run_ps("Get-Process")        # WinRM: run_cmd, run_ps, put, read_file

The image is ``HIL_WINDOWS_IMAGE`` or ``[windows] image`` in hil.toml (built as described in
guests/windows/README.md), the WinRM account ``[windows] winrm_user``/``winrm_password`` (or
``HIL_WINDOWS_USER``/``HIL_WINDOWS_PASSWORD``).  No Windows image can be had on the development
hosts, so there the fixture skips with the reason.  Each test gets its own overlay of the image;
the guest must have test signing on (unsigned drivers would not load) and gets a ``C:\\hil``
folder.  The guest is watched by the crash monitor: a bug check fails the test through the same
path as a Linux oops, named as Windows names it.
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
def windows_guest(request, hil_config, hil_lab, hil_artifacts):
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
    from hil.errors import HilError
    from hil.guest.fixture import lend_guest
    from hil.windows import deploy

    try:
        guest = hil_lab.windows_guest(
            Path(image),
            user=user,
            password=password,
            memory_mib=cfg.memory_mib,
            vcpus=cfg.vcpus,
            boot_timeout=cfg.boot_timeout_s,
        )
    except HilError as exc:
        pytest.fail(f"kernel-hil: no Windows guest: {exc}", pytrace=False)
    deploy.require_testsigning(guest.winrm)
    guest.winrm.mkdir(r"C:\hil")
    yield from lend_guest(request, hil_lab, guest, hil_artifacts)
