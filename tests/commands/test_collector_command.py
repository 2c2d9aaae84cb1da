"""``hil collector`` prints records as they arrive (run as a child process)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

from hil.collector.agent_client import ReferenceAgent

SCRIPT = (
    "import argparse, sys\n"
    "from hil.commands import collector as cmd\n"
    "p = argparse.ArgumentParser(); cmd.add_arguments(p)\n"
    "sys.exit(cmd.run(p.parse_args(['--port', '0', '--interval', '0.2'] + sys.argv[1:])))\n"
)


def test_collector_command_prints_records():
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    watchdog = threading.Timer(60, proc.kill)  # readline() below must not hang the suite
    watchdog.start()
    try:
        first = proc.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert m, first
        with ReferenceAgent("cmd-host").connect(("127.0.0.1", int(m.group(1)))) as a:
            a.created(pid=31337, image_path="/usr/bin/cmd-test", image_size=12)
            line = proc.stdout.readline()  # blocks until the record is printed
        assert "cmd-host" in line and "created" in line and "pid=31337" in line
        assert line.rstrip().endswith("/usr/bin/cmd-test")
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(10)


def test_collector_command_can_require_a_token():
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "--token", "t0ken"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watchdog = threading.Timer(60, proc.kill)
    watchdog.start()
    try:
        first = proc.stdout.readline()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert m, first
        assert "t0ken" not in first and "token required" in first
        address = ("127.0.0.1", int(m.group(1)))
        with ReferenceAgent("intruder").connect(address) as bad:
            bad.created(pid=1, image_path="/usr/bin/intruder")
            assert bad.closed.wait(10), "a HELLO without the token is refused"
        with ReferenceAgent("member", token="t0ken").connect(address) as a:
            a.created(pid=31338, image_path="/usr/bin/member")
            line = proc.stdout.readline()
        assert "member" in line and "pid=31338" in line
    finally:
        watchdog.cancel()
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert "Unauthorized" in err and "intruder" in err and "t0ken" not in err
