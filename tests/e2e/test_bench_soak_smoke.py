"""`scripts/bench soak --quick` end to end, for a few seconds: mixed traffic on both doors with
hang-ups, and a report of errors, drift and the daemon's resources. Shape only, never speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_quick_soak_writes_a_complete_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable, str(REPO / "scripts" / "bench"), "soak", "--quick", "--minutes", "0.2",
            "--engine", "torch", "--out-dir", str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads((tmp_path / "soak-quick.json").read_text())
    meta, soak = report["meta"], report["soak"]
    assert meta["concurrency"] == 4 and set(meta["engines"].values()) == {"torch"}
    assert meta["daemon_exit"] == 0

    assert soak["errors"] == 0 and soak["completed"] > 0 and soak["hung_up"] > 0
    assert set(soak["by_door_and_kind"]) == {
        f"{door}.{kind}" for door in ("http", "ipc") for kind in ("chat", "completion", "embed")
    }
    for name, s in soak["by_door_and_kind"].items():
        assert s["requests"] > 0 and s["errors"] == 0, name
        assert 0 < s["latency_p50_ms"] <= s["latency_p95_ms"], name
    drift = soak["drift"]
    assert drift["window_s"] > 0
    for kind in ("chat", "completion", "embed"):
        assert drift[kind]["first"]["requests"] > 0 and drift[kind]["last"]["requests"] > 0

    res = soak["resources"]
    for when in ("start", "end"):
        daemon = res[when]["daemon"]
        assert daemon["rss_mib"] > 0 and daemon["fds"] > 0
    assert set(res["growth"]["daemon"]) == {"rss_mib", "fds", "threads"}
    assert len(res["series"]) >= 2
    assert soak["after"] == {
        "health_status": 200,
        "in_flight": {"http": 0.0, "ipc": 0.0},
        "daemon_alive": True,
    }
    assert "wrote" in proc.stdout
