"""``hil collector`` prints records as they arrive (run as a child process)."""

from __future__ import annotations

import re
import subprocess
import sys
import threading

from hil.collector.agent_client import ReferenceAgent

SCRIPT = ("import argparse, sys\n"
          "from hil.commands import collector as cmd\n"
          "p = argparse.ArgumentParser(); cmd.add_arguments(p)\n"
          "sys.exit(cmd.run(p.parse_args(['--port', '0', '--interval', '0.2'])))\n")


def test_collector_command_prints_records():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
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
