"""Benchmark what the usage log costs a request.

Two parts:

- ``record``: in-process, the cost of ``UsageLog.record`` (the only thing a request does) while
  the writer thread flushes to DuckDB, and the cost of one flush of ``--batch`` records.
- ``burst``: a real ``hfd serve`` with a tiny BERT embedding model, hit by a burst of
  ``--requests`` embeddings requests (``"cache": false``, ``--concurrency`` in flight) over
  HTTP, with the usage log on (flushing every ``--flush-seconds``) and off, alternating
  ``--rounds`` times. Reports requests per second and latency percentiles of each, and that
  every request of the "on" runs reached the log.

Results go to ``bench-results/usage.json``. Run: ``.venv/bin/python scripts/bench usage``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_lib.cli import subcommand_parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("usage", __doc__)
    p.add_argument("--only", choices=("record", "burst"), help="run one part")
    p.add_argument("--records", type=int, default=200_000, help="records in the record part")
    p.add_argument("--batch", type=int, default=512, help="records per flush in the record part")
    p.add_argument("--requests", type=int, default=400, help="requests per burst")
    p.add_argument("--concurrency", type=int, default=16, help="requests in flight during a burst")
    p.add_argument("--rounds", type=int, default=3, help="bursts per variant (alternating on/off)")
    p.add_argument("--flush-seconds", type=float, default=0.5, help="usage_flush_seconds of the daemon")
    p.add_argument("--out", type=Path, default=REPO / "bench-results" / "usage.json")
    return p.parse_args(argv)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ----------------------------------------------------------------------------- record


def bench_record(records: int, batch: int) -> dict[str, Any]:
    from hfd.daemon.access.usage import UsageLog, UsageRecord, summarize

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        log = UsageLog(state, flush_records=batch, flush_seconds=0.5, max_queue=records + 1)
        log.start()
        rec = UsageRecord(time.time(), "r", "http", "key", "model", "/v1/embeddings", 200, 12, 0, 3.5)
        t0 = time.perf_counter()
        for _ in range(records):
            log.record(rec)
        per_record_us = (time.perf_counter() - t0) / records * 1e6
        t1 = time.perf_counter()
        log.close()
        drain_s = time.perf_counter() - t1
        written = summarize(state)[0]["requests"]

        flush_ms = []
        log2 = UsageLog(state, flush_records=10**9, flush_seconds=3600)
        for _ in range(5):
            for _ in range(batch):
                log2.record(rec)
            t = time.perf_counter()
            log2.flush()
            flush_ms.append((time.perf_counter() - t) * 1000)
    return {
        "records": records,
        "record_us": round(per_record_us, 3),
        "written": written,
        "dropped": log.dropped,
        "final_drain_s": round(drain_s, 3),
        "flush_batch": batch,
        "flush_ms_median": round(statistics.median(flush_ms), 2),
    }


# ----------------------------------------------------------------------------- burst


async def _burst(url: str, n: int, concurrency: int) -> tuple[float, list[float], int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"model": "emb", "input": [f"sentence number {i} about the weather"], "cache": False}
            t = time.perf_counter()
            r = await client.post(url, json=body)
            latencies.append(time.perf_counter() - t)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return wall, latencies, errors


def bench_burst(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from support.daemon import start_daemon
    from support.models import tiny_bert

    model = tiny_bert()
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    logged: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(args.rounds):
            for variant in ("off", "on") if rnd % 2 == 0 else ("on", "off"):
                workdir = Path(tmp) / f"{variant}-{rnd}"
                flags = [
                    "--log-level",
                    "warning",
                    "--usage-enabled",
                    "true" if variant == "on" else "false",
                    "--usage-flush-seconds",
                    str(args.flush_seconds),
                ]
                d = start_daemon(workdir, {"emb": model}, args=flags)
                try:
                    url = d.base_url + "/embeddings"
                    httpx.post(url, json={"model": "emb", "input": ["warm up"], "cache": False}, timeout=120)
                    wall, lat, errors = asyncio.run(_burst(url, args.requests, args.concurrency))
                finally:
                    d.stop()
                runs[variant].append(
                    {
                        "rps": round(args.requests / wall, 1),
                        "p50_ms": round(_pct(lat, 0.5) * 1000, 2),
                        "p99_ms": round(_pct(lat, 0.99) * 1000, 2),
                        "errors": errors,
                    }
                )
                if variant == "on":
                    from hfd.daemon.access.usage import summarize

                    rows = summarize(workdir / "state", by="route")
                    logged.append(sum(r["requests"] for r in rows if r["group"] == "/v1/embeddings"))
    summary = {
        v: {
            "rps_median": statistics.median(r["rps"] for r in rs),
            # Other work on the box only ever slows a run down: the best run is the least noisy.
            "rps_best": max(r["rps"] for r in rs),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
            "runs": rs,
        }
        for v, rs in runs.items()
    }
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "flush_seconds": args.flush_seconds,
        "usage_on": summary["on"],
        "usage_off": summary["off"],
        "rps_ratio_on_off": round(summary["on"]["rps_median"] / summary["off"]["rps_median"], 3),
        "rps_best_ratio_on_off": round(summary["on"]["rps_best"] / summary["off"]["rps_best"], 3),
        "logged_per_on_run": logged,  # each: requests + the warm-up
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    if args.only in (None, "record"):
        results["record"] = bench_record(args.records, args.batch)
        r = results["record"]
        print(
            f"record: {r['record_us']} us per record ({r['records']} records, {r['written']} written, "
            f"{r['dropped']} dropped); flush of {r['flush_batch']}: {r['flush_ms_median']} ms"
        )
    if args.only in (None, "burst"):
        results["burst"] = b = bench_burst(args)
        for v in ("usage_on", "usage_off"):
            print(
                f"burst {v}: {b[v]['rps_median']} req/s (best {b[v]['rps_best']}), p50 {b[v]['p50_ms_median']} ms, "
                f"p99 {b[v]['p99_ms_median']} ms ({b['requests']} requests, {b['concurrency']} in flight)"
            )
        print(
            f"burst: on/off throughput ratio {b['rps_ratio_on_off']} (best runs {b['rps_best_ratio_on_off']}); "
            f"logged per run {b['logged_per_on_run']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {args.out}")
    return 0
