"""A user's own image (qcow2 + kernel + initrd, qemu-guest-agent inside) boots through the same
lab as the embedded one.  The embedded image's files stand in for the user's here."""

from __future__ import annotations

import time

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


def _domains(conn) -> dict[str, object]:
    return {d.UUIDString(): d for d in conn.listAllDomains()}


def test_ready_copies_live_side_by_side_and_reset_is_off_the_tests_path():
    """Several restored copies of one snapshot at once (each under its own identity), a ready
    copy waiting for the next test, background destroy, and 0 domains after close."""
    import libvirt

    from hil.provision.domain_xml import read_owner

    with Lab(load_config()) as lab:
        a, b = lab.linux_guest(), lab.linux_guest()
        assert a.restored and b.restored and a.name != b.name
        assert a.domain.UUIDString() != b.domain.UUIDString()
        assert a.run("echo a").check().text == "a\n" and b.run("echo b").check().text == "b\n"
        for g in (a, b):  # the restoring session owns them, whoever saved the snapshot
            assert read_owner(g.domain.XMLDesc(0))["session"] == lab.owner.session
        waiting = lab._ready[0].result(timeout=120)
        assert waiting.state.value == "ready"  # made ready while the test ran: resumed, clock set
        assert abs(float(waiting.run("date +%s.%N").check().text) - time.time()) < 5
        uuid_a = a.domain.UUIDString()
        lab.discard(a)  # returns at once; the reaper destroys it
        lab._reaper.submit(lambda: None).result(timeout=60)
        assert uuid_a not in _domains(lab.conn)
        c = lab.linux_guest()
        assert c.name == waiting.name and c.run("true").exit_code == 0
        ours = {g.domain.UUIDString() for g in lab.guests if getattr(g, "domain", None) is not None}
        conn = libvirt.open(lab.config.libvirt_uri)
    try:
        assert not ours & set(_domains(conn)), "the lab left domains behind"
    finally:
        conn.close()


def test_the_snapshot_outlives_the_session():
    """A second lab (the next session, or another worker) restores from the cached snapshot:
    no cold boot."""
    with Lab(load_config()) as first:
        first.snapshot()
    with Lab(load_config()) as second:
        g = second.linux_guest()
        assert second.cold_boot_s is None and g.restored
        assert g.run("uname -r").exit_code == 0


PLUGIN_DEMAND = """
def test_first(linux_guest):
    assert linux_guest.run("true").exit_code == 0

def test_second(linux_guest):
    assert linux_guest.run("true").exit_code == 0

def test_without_a_guest():
    pass
"""


def test_the_plugin_prepares_a_guest_ahead_only_for_a_next_test_that_uses_one(tmp_path):
    """Two guest tests then one without: two restores, not three (a copy nobody asks for costs
    a restore and a destroy, which in a one-test run is most of its time)."""
    import json
    import subprocess
    import sys

    (tmp_path / "test_demand.py").write_text(PLUGIN_DEMAND)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'bt'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    steps = json.loads((tmp_path / "reports" / "out" / "timeline-main.json").read_text())["steps"]
    restores = [s for s in steps if s["name"] == "restore"]
    destroys = [s for s in steps if s["name"] == "destroy"]
    assert len(restores) == 2 and len(destroys) == 2, [(s["name"], s["args"]) for s in steps]
