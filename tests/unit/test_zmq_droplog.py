"""Dropped IPC messages are logged at most once per kind and interval, with a count."""

from __future__ import annotations

import logging

import pytest

from hfd.daemon.zmq.droplog import DropLog


def test_one_line_per_kind_and_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    drops = DropLog(interval=5.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert drops.drop("dropping an unreadable IPC message", error="x")
        for _ in range(1000):
            assert not drops.drop("dropping an unreadable IPC message", error="x")
        assert drops.drop("dropping an IPC message of too many frames")  # another kind
        now[0] += 5.0
        assert drops.drop("dropping an unreadable IPC message", error="y")
    lines = [r for r in caplog.records if r.name == "hfd.daemon.zmq.server"]
    assert [r.getMessage() for r in lines] == [
        "dropping an unreadable IPC message",
        "dropping an IPC message of too many frames",
        "dropping an unreadable IPC message",
    ]
    assert [r.__dict__["dropped_since_last_report"] for r in lines] == [1, 1, 1001]
    assert lines[2].__dict__["error"] == "y"
