"""teamdrv.sys under Wine against kernel-hil's reference collector.

Only kernel-hil's public fixtures: ``mingw`` builds the driver (cached by our sources: edit
``driver/`` and the next run rebuilds), ``wine_driver`` loads it into a fresh Wine prefix with
the collector's port in its Parameters, ``collector`` records what it sent.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.wine

LEAK_FREE = "[ksock] cleanup: irps=0 mdls=0 buffers=0 sockets=0"


@pytest.fixture(scope="session")
def teamdrv_sys(mingw):
    """Our driver, linked with the protocol codec and the ksock library kernel-hil ships."""
    return mingw.build_driver(
        ["driver/teamdrv.c", *mingw.protocol_sources, *mingw.ksock_sources],
        name="teamdrv.sys",
        include_dirs=mingw.ksock_include_dirs,
    )


def test_teamdrv_says_hello_and_delivers_its_record_once(teamdrv_sys, wine_driver, collector):
    drv = wine_driver(teamdrv_sys, "teamdrv", collector_port="CollectorPort")

    agent = collector.wait_for_agent(kind="teamdrv", timeout=30)
    assert (agent.os, agent.host) == ("windows", "team-host")
    rec = collector.wait_for(kind="created", pid=4242, timeout=20)
    assert rec.image_path == "\\??\\C:\\team\\demo.exe"
    assert rec.image_size == 1234
    assert rec.sha256 == bytes(range(32))

    # Every later REQUEST gets END alone: the record was delivered exactly once.
    collector.flush(timeout=10)
    collector.flush(timeout=10)
    assert [(r.kind, r.pid) for r in collector.records(agent=agent)] == [("created", 4242)]
    assert collector.stats(agent).protocol_errors == 0 and collector.protocol_errors == 0

    drv.stop()
    drv.guest.wait_for_log(r"\[teamdrv\] unloaded", timeout=20, start=drv.log_start)
    texts = [line.text for line in drv.guest.dbgprint_lines()[drv.log_start :]]
    assert "[teamdrv] network thread stopped" in texts
    assert [t for t in texts if t.startswith("[ksock] cleanup:")] == [LEAK_FREE]
