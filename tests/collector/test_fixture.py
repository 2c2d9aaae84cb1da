"""The ``collector`` fixture attaches its capture files to the test report (JUnit XML)."""

from __future__ import annotations

import xml.etree.ElementTree as ET


def test_fixture_records_capture_files_in_junit(pytester):
    pytester.makeconftest("from hil.collector.pytest_fixtures import collector  # noqa: F401\n")
    pytester.makepyfile(test_inner="""
        from hil.collector.agent_client import ReferenceAgent

        def test_one(collector):
            with ReferenceAgent("fx-host").connect(collector.address) as a:
                a.created(pid=9, image_path="/bin/fx")
                collector.wait_for(pid=9, timeout=10)
    """)
    result = pytester.runpytest_inprocess("-p", "no:hil", "--junitxml=out.xml", "-q")
    result.assert_outcomes(passed=1)
    root = ET.parse(pytester.path / "out.xml").getroot()
    props = {(p.get("name"), p.get("value")) for p in root.iter("property")}
    captures = [v for n, v in props if n == "collector_capture"]
    assert len(captures) == 1 and "fx-host" in captures[0]
    assert any(n == "collector_address" and v.startswith("127.0.0.1:") for n, v in props)
