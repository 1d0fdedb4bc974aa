"""Ollama's API against the OpenAI routes for the same work, on one real ``hfd serve``.

The same requests through both doors' shapes: a chat (``/api/chat`` with ``stream: false`` and
``options.num_predict`` against ``/v1/chat/completions`` with ``max_tokens``) and an embedding
(``/api/embed`` against ``/v1/embeddings``), sequentially, the two routes interleaved request
by request so that other load on the box falls on both alike. Every request has a prompt of its
own, of the same length on both routes (the response cache and the prefix cache would otherwise
answer repeats, and the second request of a pair). Reports the median and p90 latency
of each route and the ratio Ollama / OpenAI (1.0: no cost; the aim is within 5%).

Results go to ``bench-results/ollama.json``. Run: ``.venv/bin/python scripts/bench ollama``.
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

from bench_lib.cli import subcommand_parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("ollama", __doc__)
    p.add_argument("--requests", type=int, default=40, help="requests per route (default 40)")
    p.add_argument("--max-tokens", type=int, default=16, help="tokens per chat reply (default 16)")
    p.add_argument("--engine", default="torch", choices=("torch", "openvino", "onnxruntime"))
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results")
    return p.parse_args(argv)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _summary(latencies: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(latencies) * 1000, 2),
        "p90_ms": round(_pct(latencies, 0.9) * 1000, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from support.daemon import start_daemon
    from support.models import tiny_bert, tiny_llama

    models = {"chat": tiny_llama(), "emb": tiny_bert()}
    flags = ["--log-level", "warning", "--engine", args.engine]
    times: dict[str, list[float]] = {
        "ollama_chat": [],
        "openai_chat": [],
        "ollama_embed": [],
        "openai_embed": [],
    }
    tokens: dict[str, int] = {"ollama_chat": 0, "openai_chat": 0}
    with tempfile.TemporaryDirectory() as tmp:
        d = start_daemon(Path(tmp) / "d", models, args=flags)
        try:
            with httpx.Client(base_url=d.http, timeout=300) as http:

                def ollama_chat(i: int) -> None:
                    body = {
                        "model": "chat",
                        "messages": [{"role": "user", "content": f"ollama request {i}: say something"}],
                        "stream": False,
                        "options": {"temperature": 0, "num_predict": args.max_tokens},
                    }
                    r = http.post("/api/chat", json=body)
                    r.raise_for_status()
                    tokens["ollama_chat"] += r.json()["eval_count"]

                def openai_chat(i: int) -> None:
                    body = {
                        "model": "chat",
                        "messages": [{"role": "user", "content": f"openai request {i}: say something"}],
                        "temperature": 0,
                        "max_tokens": args.max_tokens,
                    }
                    r = http.post("/v1/chat/completions", json=body)
                    r.raise_for_status()
                    tokens["openai_chat"] += r.json()["usage"]["completion_tokens"]

                def ollama_embed(i: int) -> None:
                    http.post(
                        "/api/embed", json={"model": "emb", "input": [f"ollama sentence {i} a", f"b {i}"]}
                    ).raise_for_status()

                def openai_embed(i: int) -> None:
                    http.post(
                        "/v1/embeddings", json={"model": "emb", "input": [f"openai sentence {i} a", f"b {i}"]}
                    ).raise_for_status()

                calls = {
                    "ollama_chat": ollama_chat,
                    "openai_chat": openai_chat,
                    "ollama_embed": ollama_embed,
                    "openai_embed": openai_embed,
                }
                for name, call in calls.items():  # warm up: loads, first-call costs
                    call(-1 - len(name))
                for i in range(args.requests):
                    order = list(calls.items()) if i % 2 == 0 else list(reversed(calls.items()))
                    for name, call in order:
                        # Prompts of the same length on both routes, but not the same text: the
                        # response cache and the prefix cache would answer the second of a pair.
                        t0 = time.perf_counter()
                        call(i)
                        times[name].append(time.perf_counter() - t0)
        finally:
            d.stop()
    out: dict[str, Any] = {name: _summary(lat) for name, lat in times.items()}
    out["chat_ratio"] = round(out["ollama_chat"]["median_ms"] / out["openai_chat"]["median_ms"], 3)
    out["embed_ratio"] = round(out["ollama_embed"]["median_ms"] / out["openai_embed"]["median_ms"], 3)
    out["tokens"] = tokens
    out["requests"] = args.requests
    out["max_tokens"] = args.max_tokens
    out["engine"] = args.engine
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    result = run(args)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "ollama.json").write_text(json.dumps(result, indent=1))
    for kind in ("chat", "embed"):
        o, a = result[f"ollama_{kind}"], result[f"openai_{kind}"]
        print(
            f"{kind}: ollama {o['median_ms']} ms (p90 {o['p90_ms']}), openai {a['median_ms']} ms "
            f"(p90 {a['p90_ms']}); ratio {result[f'{kind}_ratio']}"
        )
    return 0
