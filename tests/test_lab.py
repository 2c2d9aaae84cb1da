"""A user's own image (qcow2 + kernel + initrd, qemu-guest-agent inside) boots through the same
lab as the embedded one.  The embedded image's files stand in for the user's here."""

from __future__ import annotations

import pytest

from hil.config import load_config
from hil.images.linux_image import ensure_linux_image
from hil.lab import Lab

pytestmark = pytest.mark.hil_linux


def test_user_supplied_image_with_direct_kernel_boot(tmp_path):
    img = ensure_linux_image()
    (tmp_path / "hil.toml").write_text(
        f'[linux]\nimage = "{img.disk}"\nkernel = "{img.kernel}"\ninitrd = "{img.initrd}"\n'
        f'cmdline = "{img.cmdline}"\nkbuild_dir = "{img.kbuild_dir}"\nsnapshot = false\nvcpus = 1\n'
    )
    config = load_config(tmp_path / "hil.toml")
    with Lab(config) as lab:
        guest = lab.linux_guest()
        assert not guest.restored
        assert guest.run("uname -r").check().text.strip() == img.kernel_release
        assert guest.kernel_release == img.kernel_release
        # the user's image is never written: the guest runs on an overlay of it
        assert guest.spec.disk != img.disk and guest.spec.disk.parent == lab.dir
