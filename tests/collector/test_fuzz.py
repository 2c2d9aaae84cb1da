"""Bounded fuzz: 20,000 mutated frames against a live collector (the long run is
``python tests/collector/fuzz_collector.py``)."""

from __future__ import annotations

import logging

from fuzz_collector import fuzz

from hil.collector import Collector


def test_fuzz_20000_frames_no_crash_no_valid_record_lost(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="hil.collector")
    with Collector(interval=0.2, capture_dir=tmp_path, max_capture_bytes=1 << 16) as c:
        res = fuzz(c, 20_000, per_conn=50, seed=20240, deadline_s=60)
    assert not res.failures, res.failures
    assert res.frames_sent == 20_000
    assert res.alive_after
    assert res.records_missing == 0 and res.records_expected > 10_000
    assert res.frames_decoded > 15_000  # value-mutated frames are all decoded
    assert res.clean_records_missing == 0 and res.clean_records_duplicated == 0
    assert res.clean_records_expected > 0
    assert res.protocol_errors > 0  # the mutations were noticed
    assert set(res.error_kinds) <= {
        "BadMagic",
        "UnsupportedVersion",
        "UnknownFrameType",
        "FrameTooLarge",
        "MalformedFrame",
        "MalformedRecord",
        "TruncatedFrame",
        "UnexpectedFrame",
        "StalledPeer",
    }
