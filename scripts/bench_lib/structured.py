"""Structured output under load: what constrained decoding costs a shared batch.

Against a real ``hfd serve`` (the tiny random Llama with its byte-level vocabulary, the torch
engine unless ``--engine``), over the OpenAI HTTP door:

- throughput: ``--requests`` concurrent json_schema requests (8 schemas from
  ``tests/support/json_schemas.py``, compiled once beforehand, ``--max-tokens`` at most)
  against as many unconstrained requests with the same prompts, each generating exactly as many
  tokens as its constrained twin did (``ignore_eos``), greedy; generated tokens per second of
  wall time, median of ``--rounds`` rounds, and their ratio (constrained / unconstrained).
- time to first token of a request with a schema never seen before, sent while
  ``--background`` long unconstrained streams keep the batch full, against one with a cached
  schema under the same load (median of 5 each, alternated), and their ratio.

Results go to ``bench-results/structured.json``. Run: ``.venv/bin/python scripts/bench structured``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_lib import report

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def _format(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench structured", description=__doc__.split("\n\n")[0])
    p.add_argument("--engine", default="torch", choices=("torch", "openvino"))
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--background", type=int, default=24, help="unconstrained streams during the TTFT part")
    args = p.parse_args(argv)

    import httpx
    from support.daemon import running_daemon
    from support.json_schemas import SCHEMAS
    from support.models import tiny_llama

    schemas = SCHEMAS[:8]
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_daemon(Path(tmp), {"tiny": tiny_llama()}, args=["--engine", args.engine]) as d,
    ):
        client = httpx.Client(base_url=d.http, timeout=300)

        def chat(i: int, fmt: dict[str, Any] | None, max_tokens: int = args.max_tokens) -> int:
            body: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": f"Item {i} as JSON."}],
                                    "temperature": 0, "max_tokens": max_tokens, "cache": False}  # fmt: skip
            if fmt is not None:
                body["response_format"] = fmt
            else:  # exactly as long as its constrained twin (see lengths below)
                body["ignore_eos"] = True
                body["min_tokens"] = max_tokens
            r = client.post("/v1/chat/completions", json=body)
            r.raise_for_status()
            return int(r.json()["usage"]["completion_tokens"])

        # Load the model, compile the schemas, and note each constrained reply's length (greedy:
        # the same every round): its unconstrained twin generates exactly as many tokens, so the
        # two sides do the same work but for the grammar.
        lengths = [chat(i, _format(schemas[i % 8], f"s{i % 8}")) for i in range(args.requests)]
        rates: dict[str, list[float]] = {"constrained": [], "unconstrained": []}
        with ThreadPoolExecutor(args.requests) as pool:
            for _ in range(args.rounds):
                for kind in rates:
                    fmts = [_format(schemas[i % 8], f"s{i % 8}") if kind == "constrained" else None
                            for i in range(args.requests)]  # fmt: skip
                    started = time.perf_counter()
                    tokens = sum(pool.map(chat, range(args.requests), fmts, lengths))
                    rates[kind].append(tokens / (time.perf_counter() - started))
        con, unc = statistics.median(rates["constrained"]), statistics.median(rates["unconstrained"])
        print(
            f"throughput: constrained {con:.0f} tok/s, unconstrained {unc:.0f} tok/s, ratio {con / unc:.2f}"
        )

        stop = threading.Event()

        def background(i: int) -> None:
            while not stop.is_set():
                chat(100 + i, None, max_tokens=200)

        def ttft(schema: dict[str, Any], name: str) -> float:
            body = {"model": "tiny", "messages": [{"role": "user", "content": "JSON please."}], "temperature": 0,
                    "max_tokens": 32, "cache": False, "stream": True, "response_format": _format(schema, name)}  # fmt: skip
            started = time.perf_counter()
            first = None
            with client.stream("POST", "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                for line in r.iter_lines():  # one iterator: read to the end after the first token
                    if first is None and line.startswith("data: ") and '"content"' in line:
                        first = time.perf_counter() - started
            if first is None:
                raise RuntimeError("no content in the stream")
            return first

        new: list[float] = []
        cached: list[float] = []
        with ThreadPoolExecutor(args.background) as pool:
            jobs = [pool.submit(background, i) for i in range(args.background)]
            time.sleep(2.0)  # the batch fills
            try:
                for k in range(5):
                    fresh = {
                        **SCHEMAS[8 + k],
                        "title": f"fresh-{time.time_ns()}",
                    }  # a schema not compiled yet
                    new.append(ttft(fresh, f"new{k}"))
                    cached.append(ttft(schemas[0], "s0"))
            finally:
                stop.set()  # else the pool would wait for the background loops forever
            for j in jobs:
                j.result()
        t_new, t_cached = statistics.median(new), statistics.median(cached)
        print(f"ttft under load: new schema {t_new * 1000:.0f} ms, cached {t_cached * 1000:.0f} ms, "
              f"ratio {t_new / t_cached:.2f}")  # fmt: skip
        client.close()
    result = {
        "machine": platform.processor() or platform.machine(), "engine": args.engine, "requests": args.requests,
        "max_tokens": args.max_tokens, "constrained_tok_per_s": round(con, 1), "unconstrained_tok_per_s": round(unc, 1),
        "throughput_ratio": round(con / unc, 3), "ttft_new_ms": round(t_new * 1000, 1),
        "ttft_cached_ms": round(t_cached * 1000, 1), "ttft_ratio": round(t_new / t_cached, 3),
    }  # fmt: skip
    out = REPO / "bench-results" / "structured.json"
    report.write_json(out, result)  # atomic, like every results file
    print(f"structured: {json.dumps(result)} ({out})")
    return 0
