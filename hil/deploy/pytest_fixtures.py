"""Public pytest fixtures for Linux kernel modules (re-exported by :mod:`hil.pytest_plugin`).

``kmod``: build a module against the test guest's own kernel, load and unload it::

    def test_my_module(linux_guest, kmod):
        ko = kmod.build(Path(__file__).parent.parent / "src")
        kmod.load(ko, verbose=1)
        assert linux_guest.read_file("/proc/mymod") == b"ready\\n"

At teardown it unloads what the test left loaded, saves the guest's ``dmesg`` as an artifact,
and a kernel report during the test (oops, WARNING, lockup...) fails it with the report's
title through the plugin's one crash path.  Every module loaded is named, with its SHA-256, in
the test's JUnit properties (``hil_deployed_<name>``, ``..._sha256``, ``..._origin``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hil.deploy.module_session import ModuleSession


@pytest.fixture
def kmod(request, linux_guest, hil_artifacts) -> Iterator[ModuleSession]:
    session = ModuleSession(
        linux_guest, hil_artifacts, on_deploy=lambda d: request.node.user_properties.extend(d.properties())
    )
    yield session
    problems = session.finish()
    if problems:
        pytest.fail("kernel-hil kmod teardown: " + "; ".join(problems), pytrace=False)
