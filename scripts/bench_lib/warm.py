"""Benchmark a warm start: the first request to a model whose engine export is already cached,
on a freshly started ``hfd serve``, and where its seconds go.

A first daemon builds the exports (not measured) into a cache directory; then, ``--rounds``
times, a new daemon on that cache answers one chat and one embeddings request, each the first
to its model. Each request's seconds are split with the daemon's own log lines (JSON, one per
line): the export cache lookup (``export warm``), the engine's load after it (``encoder
loaded`` / ``generator loaded``: tokenizer, compile, proving, warm-up), the model manager's part
of the load (``model loaded`` less the engine's), and the rest (resolving, scheduling, the
first batch, the reply). The models are the tests' tiny random-weight ones
(``tests/support/models.py``), so the figures are fixed costs, not model compute. Results:
``bench-results/warm.json``. Run: ``.venv/bin/python scripts/bench warm [--engine openvino]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_lib import report
from bench_lib.cli import subcommand_parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    "embed": ("/v1/embeddings", {"input": "hello"}),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("warm", __doc__)
    p.add_argument("--engine", default="openvino", choices=("openvino", "onnxruntime", "torch"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--idle", type=float, default=0.0, help="seconds between the ready line and the request")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results", help="where the JSON goes")
    return p.parse_args(argv)


def _logs(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _seconds(records: list[dict[str, Any]], msg: str) -> float:
    return sum(float(r.get("seconds") or 0.0) for r in records if r.get("msg") == msg)


def _phases(records: list[dict[str, Any]], total: float) -> dict[str, float]:
    export = _seconds(records, "export warm")
    engine = _seconds(records, "encoder loaded") + _seconds(records, "generator loaded")
    load = _seconds(records, "model loaded")
    return {
        "total": total,
        "export_lookup": export,
        "engine_load": max(0.0, engine - export),
        "manager": max(0.0, load - engine),
        "request": max(0.0, total - load),
        "exported": float(sum(1 for r in records if r.get("msg") == "export cold")),
    }


def _first_request(
    root: Path, models: dict[str, Path | str], engine: str, kind: str, idle: float = 0.0
) -> dict[str, float]:
    import httpx
    from support.daemon import start_daemon

    # One work dir for every daemon: the same state and cache dirs, as a restarted daemon has.
    daemon = start_daemon(root / "daemon", {kind: models[kind]}, args=["--engine", engine])
    try:
        path, body = REQUESTS[kind]
        time.sleep(idle)  # a restarted daemon usually waits a while for its first request
        seen = len(daemon.output)
        start = time.perf_counter()
        reply = httpx.post(daemon.http + path, json={"model": kind, **body}, timeout=600)
        total = time.perf_counter() - start
        if reply.status_code != 200:
            raise SystemExit(f"{kind}: {reply.status_code} {reply.text[:2000]}")
        time.sleep(0.2)  # the last log lines
        return _phases(_logs(daemon.output[seen:]), total)
    finally:
        daemon.stop()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from support.models import tiny_bert, tiny_llama

    models: dict[str, Path | str] = {"chat": tiny_llama(), "embed": tiny_bert()}
    kinds = ["embed"] if args.engine == "onnxruntime" else ["chat", "embed"]
    results: dict[str, Any] = {"engine": args.engine, "rounds": args.rounds, "idle": args.idle}
    with tempfile.TemporaryDirectory(prefix="hfd-bench-warm-") as tmp:
        root = Path(tmp)
        for kind in kinds:
            _first_request(root, models, args.engine, kind)  # builds the export: not measured
            runs = [_first_request(root, models, args.engine, kind, args.idle) for _ in range(args.rounds)]
            median = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
            results[kind] = {"median": median, "runs": runs}
            print(f"{kind:>6}: " + "  ".join(f"{k} {v:.3f}" for k, v in median.items()))
    report.write_json(args.out_dir / "warm.json", results)
    return 0
