"""The debug kernel for real: built from Debian's source by the product code (about 22 minutes
under nice on two cores, then cached), its config carrying every debug option, and a module
built against its headers tree for its release.  Opt-in: ``HIL_DEBUG_KERNEL_BUILD=1``."""

from __future__ import annotations

import os

import pytest

from hil.deploy.kmod import kernel_release
from hil.deploy.modinfo import read_modinfo
from hil.deploy.reference import build_agent, build_kserver
from hil.images import debug_kernel as dk

pytestmark = [
    pytest.mark.debug_kernel_build,
    pytest.mark.skipif(
        os.environ.get("HIL_DEBUG_KERNEL_BUILD") != "1",
        reason=f"builds the debug kernel ({dk.BUILD_TIME}, once): set HIL_DEBUG_KERNEL_BUILD=1",
    ),
]


@pytest.fixture(scope="module")
def kernel() -> dk.DebugKernel:
    return dk.ensure_debug_kernel()


def test_the_debug_kernel_is_built_from_the_guest_kernels_source(kernel):
    from hil.images.linux_image import cached_image

    image = cached_image()
    assert image is not None
    version = dk.guest_kernel_version(image)
    assert kernel.source_version == version and kernel.key == dk.plan_for(image).key
    upstream = version.split("-")[0]  # 6.1.176-1 -> 6.1.176
    assert kernel.release == f"{upstream}-hil-debug"
    assert dk.bzimage_version_string(kernel.bzimage).startswith(f"{kernel.release} (kernel-hil@hil-debug)")
    dk.check_config(kernel.config, dk.fragment_paths())  # every fragment line is in the final config
    assert sorted(p.name for p in kernel.modules_dir.iterdir()) == [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ]


def test_modules_build_against_its_headers_tree_for_its_release(kernel):
    assert kernel_release(kernel.kbuild_dir) == kernel.release
    for ko in (build_kserver(kernel.kbuild_dir), build_agent(kernel.kbuild_dir)):
        assert read_modinfo(ko).kernel_release == kernel.release, ko
