"""Vision chat throughput with batching: ``scripts/bench vision --concurrency N``.

N chat requests, each with its own image (a data: URL) and ``max_tokens`` new tokens
(``ignore_eos``, greedy), sent to ``hfd serve`` with the ``openai`` client one after another,
then all N at once from N threads; the same requests both ways, so the replies must be equal
(greedy: batched rows give the tokens they give alone). Reports completion tokens per second
of each (median over the rounds), concurrent / sequential, and the engine calls the
concurrent rounds took (from ``/api/ps``: fewer calls than requests is batching).

The model: ``--model tiny`` (the tests' tiny LLaVA: the figure is serving and ``generate``'s
per-step overhead) or ``--model bench`` (a random LLaVA of a real model's compute:
``tests/support/vlm_models.bench_llava``, 56M-parameter Llama, 256 image tokens).
Results: ``bench-results/vision-batch.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_lib import report
from bench_lib.served import scheduler_stats

REPO = Path(__file__).resolve().parents[2]


def _ask(client: Any, url: str, tokens: int) -> tuple[str, int]:
    reply = client.chat.completions.create(
        model="vlm",
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                               {"type": "text", "text": "describe the picture"}]}],
        max_tokens=tokens, temperature=0, extra_body={"ignore_eos": True},
    )  # fmt: skip
    assert reply.usage is not None, "no usage came back"
    return reply.choices[0].message.content or "", reply.usage.completion_tokens


def _calls(base: str) -> int:
    return int(scheduler_stats(base, "vlm")["calls"])


def _round(client: Any, urls: list[str], tokens: int, together: bool) -> tuple[float, list[str]]:
    """Tokens per second of one round, and the replies in request order."""
    t0 = time.perf_counter()
    if together:
        with ThreadPoolExecutor(len(urls)) as pool:
            out = list(pool.map(lambda url: _ask(client, url, tokens), urls))
    else:
        out = [_ask(client, url, tokens) for url in urls]
    seconds = time.perf_counter() - t0
    return sum(n for _, n in out) / seconds, [text for text, _ in out]


def main(args: argparse.Namespace) -> int:
    import openai
    from support import media_models, vlm_models
    from support.daemon import start_daemon

    engine = getattr(args, "engine", "torch")  # batching is torch's; OpenVINO takes one per call
    path = vlm_models.bench_llava() if args.model == "bench" else vlm_models.tiny_llava()
    urls = [media_models.data_url(media_models.png(width=args.size, height=args.size, seed=s))
            for s in range(args.concurrency)]  # fmt: skip
    sequential: list[float] = []
    concurrent: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        d = start_daemon(
            Path(tmp) / "d", {"vlm": path}, args=["--engine", engine, "--threads", str(args.threads)]
        )
        try:
            client = openai.OpenAI(base_url=d.http + "/v1", api_key="none", max_retries=0, timeout=600)
            _ask(client, urls[0], 2)  # loads the model
            calls = 0
            for _ in range(args.rounds):
                rate, alone = _round(client, urls, args.tokens, together=False)
                sequential.append(rate)
                before = _calls(d.http)
                rate, together = _round(client, urls, args.tokens, together=True)
                calls += _calls(d.http) - before
                concurrent.append(rate)
                if together != alone:
                    raise SystemExit("concurrent replies differ from the same requests one at a time")
        finally:
            d.stop()
    result: dict[str, Any] = {
        "model": "bench-llava" if args.model == "bench" else "tiny-llava",
        "engine": engine,
        "threads": args.threads,
        "image_pixels": f"{args.size}x{args.size}",
        "concurrency": args.concurrency,
        "tokens_per_request": args.tokens,
        "rounds": args.rounds,
        "sequential_tok_s": round(statistics.median(sequential), 1),
        "concurrent_tok_s": round(statistics.median(concurrent), 1),
        "engine_calls_per_concurrent_round": round(calls / args.rounds, 2),
    }
    result["speedup"] = round(result["concurrent_tok_s"] / result["sequential_tok_s"], 2)
    print(json.dumps(result))
    report.write_json(REPO / "bench-results" / "vision-batch.json", result)
    return 0
