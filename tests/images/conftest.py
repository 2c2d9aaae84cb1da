"""The marker of the opt-in real build of the debug kernel (``HIL_DEBUG_KERNEL_BUILD=1``)."""

from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "debug_kernel_build: builds the debug kernel for real (about 22 min on 2 cores, once; then cached); "
        "skipped unless HIL_DEBUG_KERNEL_BUILD=1",
    )
