"""The ``collector`` fixture attaches its capture files to the test report (JUnit XML)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET


def test_fixture_records_capture_files_in_junit(tmp_path):
    (tmp_path / "conftest.py").write_text("from hil.collector.pytest_fixtures import collector  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent("""
        from hil.collector.agent_client import ReferenceAgent

        def test_one(collector):
            with ReferenceAgent("fx-host").connect(collector.address) as a:
                a.created(pid=9, image_path="/bin/fx")
                collector.wait_for(pid=9, timeout=10)
    """)
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:hil",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--junitxml=out.xml",
            "--rootdir",
            str(tmp_path),
            "test_inner.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = ET.parse(tmp_path / "out.xml").getroot()
    props = [(p.get("name"), p.get("value")) for p in root.iter("property")]
    captures = [v for n, v in props if n == "collector_capture"]
    assert len(captures) == 1 and "fx-host" in captures[0]
    assert any(n == "collector_address" and v.startswith("127.0.0.1:") for n, v in props)


def test_fixture_takes_collector_options_from_an_indirect_parameter(tmp_path):
    (tmp_path / "conftest.py").write_text("from hil.collector.pytest_fixtures import collector  # noqa: F401\n")
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent("""
        import pytest
        from hil.collector.agent_client import ReferenceAgent

        @pytest.mark.parametrize("collector", [{"token": "fx-token", "max_connections": 5}],
                                 indirect=True)
        def test_token(collector):
            assert collector.max_connections == 5
            with ReferenceAgent("no-token").connect(collector.address) as bad:
                assert bad.closed.wait(10)
            with ReferenceAgent("fx-host", token="fx-token").connect(collector.address) as a:
                a.created(pid=9, image_path="/bin/fx")
                collector.wait_for(pid=9, timeout=10)
            assert collector.error_counts() == {"Unauthorized": 1}
    """)
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:hil",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--rootdir",
            str(tmp_path),
            "test_inner.py",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
