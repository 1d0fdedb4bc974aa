"""`scripts/bench --quick` end to end: it starts a daemon, drives both doors, runs the engine
offline, and writes a JSON report and a plot. Numbers are checked for shape, never for speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_quick_bench_writes_a_complete_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench"),
            "--quick",
            "--engine",
            "torch",
            "--out-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads((tmp_path / "bench-torch-quick.json").read_text())
    png = tmp_path / "bench-torch-quick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert report["meta"]["engine"] == "torch"
    assert set(report["meta"]["engines"].values()) == {"torch"}
    assert report["meta"]["plan"] == "quick"
    assert report["meta"]["threads"] >= 1

    gen = report["generation"]
    assert gen["offline"]["tokens"] == gen["offline"]["requests"] * gen["tokens_per_request"]
    assert gen["offline"]["tokens_per_s"] > 0
    assert {(lv["door"], lv["concurrency"]) for lv in gen["served"]} == {
        ("http", 1),
        ("ipc", 1),
        ("http", 4),
        ("ipc", 4),
    }
    for lv in gen["served"]:
        assert lv["errors"] == 0, lv
        assert lv["tokens"] == lv["requests"] * gen["tokens_per_request"]
        assert lv["tokens_per_s"] > 0 and lv["requests_per_s"] > 0
        assert 0 < lv["ttft_p50_ms"] <= lv["latency_p95_ms"]
    assert gen["daemon_scheduler"]["tokens_generated"] > 0
    # The torch engine is also measured against transformers' own generate on one static batch.
    static = gen["offline_transformers_static"]
    assert static["tokens"] == gen["offline"]["requests"] * gen["tokens_per_request"]
    assert static["tokens_per_s"] > 0
    assert set(static["ratios"]) == {"engine_offline_vs_static", "http_vs_static", "ipc_vs_static"}
    # ... and one stream against generate called once per prompt, as many prompts as served.
    one = gen["offline_transformers_one"]
    one_level = next(lv for lv in gen["served"] if lv["concurrency"] == 1)
    assert one["batch"] == 1 and one["requests"] == one_level["requests"]
    assert one["tokens"] == one["requests"] * gen["tokens_per_request"]
    assert set(one["ratios"]) == {"http_one_vs_generate", "ipc_one_vs_generate"}
    assert all(v > 0 for v in one["ratios"].values())
    assert set(gen["ratios"]) == {
        "http_vs_offline",
        "ipc_vs_offline",
        "http_vs_one_at_a_time",
        "ipc_vs_one_at_a_time",
    }
    assert all(v > 0 for v in gen["ratios"].values())

    emb = report["embeddings"]
    assert emb["offline"]["inputs_per_s"] > 0
    for lv in emb["served"]:
        assert lv["errors"] == 0, lv
        assert lv["inputs"] == lv["requests"] > 0
        assert lv["inputs_per_s"] > 0 and lv["latency_p50_ms"] > 0
    assert all(v > 0 for v in emb["ratios"].values())

    ttft = report["ttft"]
    assert ttft["unloaded"]["samples"] == ttft["loaded"]["samples"] > 0
    assert ttft["unloaded"]["ttft_p50_ms"] > 0 and ttft["loaded"]["ttft_p50_ms"] > 0
    # The ratio is only reported when the long generations outlasted the measurement.
    if ttft["background_ran_throughout"]:
        assert ttft["ratios"]["loaded_vs_unloaded"] > 0
    else:
        assert ttft["ratios"]["loaded_vs_unloaded"] is None

    assert {t["ratio"] for t in report["targets"]} >= {
        "generation.http_vs_offline",
        "embeddings.ipc_vs_http",
        "ttft.loaded_vs_unloaded",
    }
    assert "wrote" in proc.stdout
