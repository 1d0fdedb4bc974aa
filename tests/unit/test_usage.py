"""The usage log in a real DuckDB file: batched writes, flush on close, a bounded queue that
drops instead of blocking, and the summaries ``hfd stats`` prints."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hfd.client.errors import InvalidRequest
from hfd.daemon.access.usage import UsageLog, UsageRecord, parse_since, summarize


def rec(
    model: str, key: str, *, pin: int, pout: int, status: int = 200, ts: float | None = None, ms: float = 10.0
) -> UsageRecord:
    return UsageRecord(
        ts=time.time() if ts is None else ts,
        request_id="r",
        door="http",
        key=key,
        model=model,
        route="/v1/chat/completions",
        status=status,
        prompt_tokens=pin,
        completion_tokens=pout,
        latency_ms=ms,
    )


def test_records_are_written_in_batches_and_on_close(tmp_path: Path) -> None:
    log = UsageLog(tmp_path, flush_records=3, flush_seconds=3600)
    log.start()
    try:
        for i in range(3):
            assert log.record(rec("a", "k1", pin=i, pout=1))
        deadline = time.monotonic() + 20
        while log.written < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.written == 3, "a full batch must be written without waiting for the interval"
        log.record(rec("b", "k2", pin=5, pout=7, status=500))
        assert log.pending() == 1
    finally:
        log.close()
    assert log.pending() == 0 and log.written == 4
    by_model = {r["group"]: r for r in summarize(tmp_path, by="model")}
    assert by_model["a"]["requests"] == 3 and by_model["a"]["prompt_tokens"] == 0 + 1 + 2
    assert by_model["a"]["completion_tokens"] == 3 and by_model["a"]["errors"] == 0
    assert by_model["b"]["errors"] == 1 and by_model["b"]["completion_tokens"] == 7


def test_a_full_queue_drops_instead_of_blocking(tmp_path: Path) -> None:
    dropped: list[int] = []
    log = UsageLog(tmp_path, max_queue=2, flush_records=100, on_drop=lambda: dropped.append(1))  # not started
    assert log.record(rec("a", "k", pin=1, pout=1))
    assert log.record(rec("a", "k", pin=1, pout=1))
    assert not log.record(rec("a", "k", pin=1, pout=1))
    assert log.dropped == 1 and dropped == [1]
    assert log.flush() == 2
    assert summarize(tmp_path)[0]["requests"] == 2


def test_summaries_by_key_day_and_since(tmp_path: Path) -> None:
    log = UsageLog(tmp_path)
    old = time.time() - 3 * 86400
    log.record(rec("a", "alice", pin=10, pout=20, ts=old))
    log.record(rec("a", "bob", pin=1, pout=2))
    log.record(rec("b", "bob", pin=3, pout=4))
    log.flush()
    by_key = {
        r["group"]: (r["requests"], r["prompt_tokens"], r["completion_tokens"])
        for r in summarize(tmp_path, by="key")
    }
    assert by_key == {"alice": (1, 10, 20), "bob": (2, 4, 6)}
    recent = summarize(tmp_path, by="key", since=parse_since("1d"))
    assert [r["group"] for r in recent] == ["bob"]
    days = summarize(tmp_path, by="day")
    assert len(days) == 2 and sum(r["requests"] for r in days) == 3
    with pytest.raises(InvalidRequest):
        summarize(tmp_path, by="colour")
    with pytest.raises(InvalidRequest):
        parse_since("yesterday-ish")
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200


def test_reading_while_a_writer_is_active(tmp_path: Path) -> None:
    """`hfd stats` reads the file between the daemon's writes (no DuckDB lock error)."""
    log = UsageLog(tmp_path, flush_records=1, flush_seconds=0.05)
    log.start()
    try:
        for _ in range(20):
            log.record(rec("a", "k", pin=1, pout=1))
            out = subprocess.run(
                [sys.executable, "-m", "hfd", "stats", "--json", "--state-dir", str(tmp_path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, out.stderr
            if out.stdout.strip() != "[]":
                break
    finally:
        log.close()
    rows = json.loads(
        subprocess.run(
            [sys.executable, "-m", "hfd", "stats", "--json", "--by", "key", "--state-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert rows[0]["group"] == "k" and rows[0]["requests"] == log.written


def test_empty_log_summary(tmp_path: Path) -> None:
    assert summarize(tmp_path) == []
