"""``hil bench agent`` without a guest: its command-line shape."""

import argparse

from hil.bench import agent


def test_bench_agent_module_shape():
    p = argparse.ArgumentParser()
    agent.add_arguments(p)
    args = p.parse_args(["--execs", "10"])
    assert args.execs == 10 and args.interval == 0.05 and agent.HELP
