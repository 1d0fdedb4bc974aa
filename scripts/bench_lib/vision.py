"""Benchmark vision chat's time to first token: a streamed chat with one image (a data: URL)
served by ``hfd serve`` over HTTP, against the same engine offline (``--engine torch``:
transformers' ``generate`` with a streamer, greedy, on inputs built by its processor, the
engine's own prompt builder; ``--engine openvino``: GenAI's VLMPipeline in its engine process, as
the daemon runs it, from the export the daemon then reads).

The model is the random-weight tiny LLaVA of the tests with llava-hf's chat template
(``tests/support/vlm_openvino_models.py``), so the figure is what serving adds around one
prefill (base64 and image decoding, the processor, scheduling, SSE) more than model compute. Reports the median seconds to the first token of
each, and offline / served (1.0: serving costs nothing). Results: ``bench-results/vision.json``
(torch) and ``bench-results/vision-openvino.json``.
Run: ``.venv/bin/python scripts/bench vision [--engine torch|openvino] [--rounds N] [--size PIXELS]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_lib import report
from bench_lib.cli import subcommand_parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]
TOKENS = 16


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("vision", __doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=1,
                   help="N > 1: the throughput of N concurrent requests against the same N one at a time")  # fmt: skip
    p.add_argument("--tokens", type=int, default=32, help="with --concurrency: new tokens per request")
    p.add_argument("--model", choices=("tiny", "bench"), default="tiny",
                   help="with --concurrency: the tests' tiny LLaVA or a benchmark-sized one")  # fmt: skip
    p.add_argument("--size", type=int, default=336, help="the image's width and height in pixels")
    p.add_argument("--threads", type=int, default=1, help="engine threads, offline and served alike")
    p.add_argument(
        "--engine", choices=("torch", "openvino"), default="torch", help="the engine, offline and served"
    )
    return p.parse_args(argv)


def _messages(url: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "describe the picture"}]}]  # fmt: skip


def _offline_ttft(path: Path, raw: bytes, rounds: int, threads: int, engine: str, cache: Path) -> list[float]:
    """Seconds from the image's bytes to the first new token, offline."""
    from hfd.backends import vlm_openvino, vlm_torch
    from hfd.backends.base import LoadOptions, SamplingParams
    from hfd.daemon import images
    from hfd.daemon.settings import Settings

    opts = LoadOptions(path=path, task="vision-chat", threads=threads, cache_dir=cache)
    model = vlm_openvino.load(opts) if engine == "openvino" else vlm_torch.load(opts)
    hf = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe the picture"}]}]
    url = "data:image/png;base64," + base64.b64encode(raw).decode()
    times: list[float] = []
    first: list[float] = []

    def emit(ids: list[int]) -> None:
        if not first:
            first.append(time.perf_counter())

    for _ in range(rounds + 1):  # the first is a warm-up
        first.clear()
        t0 = time.perf_counter()
        prompt = model.prepare(hf, [images.decode_image(url, Settings(), "image")])
        model.generate(prompt, SamplingParams(max_tokens=TOKENS, temperature=0), emit, threading.Event())
        times.append(first[0] - t0)
    model.close()
    return times[1:]


def _served_ttft(base: str, url: str, rounds: int) -> list[float]:
    import openai

    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
    times: list[float] = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        stream = client.chat.completions.create(model="vlm", messages=_messages(url), max_tokens=TOKENS,  # type: ignore[arg-type]
                                                temperature=0, stream=True)  # fmt: skip
        seen = None
        for chunk in stream:
            if seen is None and chunk.choices and chunk.choices[0].delta.content is not None:
                seen = time.perf_counter() - t0
        assert seen is not None, "no token came back"
        times.append(seen)
    return times[1:]


def main(argv: list[str]) -> int:
    from support import media_models
    from support.daemon import start_daemon
    from support.vlm_openvino_models import tiny_llava_hf

    args = parse_args(argv)
    if args.concurrency > 1:  # batching: bench_lib/vision_batch.py
        from bench_lib import vision_batch

        return vision_batch.main(args)
    path = tiny_llava_hf()  # llava-hf's template (a newline after each image), which both engines serve
    raw = media_models.png(width=args.size, height=args.size, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        # The daemon's cache directory: it reads the export the offline run made.
        offline = _offline_ttft(path, raw, args.rounds, args.threads, args.engine, Path(tmp) / "d" / "cache")
        d = start_daemon(
            Path(tmp) / "d", {"vlm": path}, args=["--engine", args.engine, "--threads", str(args.threads)]
        )
        try:
            served = _served_ttft(d.http, media_models.data_url(raw), args.rounds)
        finally:
            d.stop()
    result: dict[str, Any] = {"model": "tiny-llava-hf", "engine": args.engine, "image_pixels": f"{args.size}x{args.size}", "rounds": args.rounds,
                              "threads": args.threads,
                              "offline_ttft_median_s": round(statistics.median(offline), 4),
                              "served_ttft_median_s": round(statistics.median(served), 4)}  # fmt: skip
    result["ratio"] = round(result["offline_ttft_median_s"] / result["served_ttft_median_s"], 3)
    print(json.dumps(result))
    name = "vision.json" if args.engine == "torch" else f"vision-{args.engine}.json"
    report.write_json(REPO / "bench-results" / name, result)  # atomic, like every results file
    return 0
