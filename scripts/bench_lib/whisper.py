"""Benchmark Whisper transcription: 30 s of audio served by ``hfd serve`` over HTTP (multipart
upload, the daemon decodes it with PyAV) against the same engine offline on the same samples
(transformers' ``generate``, greedy; or OpenVINO GenAI's ``WhisperPipeline.generate``), and
concurrent requests against one at a time.

The offline engine is loaded with the load options the daemon gives it (the same thread rule:
``bench_lib.rerank.daemon_load_options``), so the ratio is what serving adds, not a thread
count. Where served time goes: the PyAV decode of the upload is timed on its own, and the
daemon's scheduler counters (engine calls, requests) come from ``/api/ps``.

The model is the random-weight tiny Whisper of the tests (``tests/support/media_models.py``;
its generation config stops after 20 tokens), so the figure is what serving adds around one
window: upload, decoding, scheduling. Reports medians and the ratio offline / served (1.0:
serving costs nothing; target 0.9), and for each concurrency N the seconds for N requests at
once (distinct tones) against N one after another. Results go to ``bench-results/whisper.json``
(``whisper-openvino.json`` for OpenVINO).
Run: ``.venv/bin/python scripts/bench whisper [--engine torch|openvino] [--rounds N] [--concurrency 4,8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_lib import report
from bench_lib.cli import subcommand_parser
from bench_lib.rerank import daemon_load_options
from bench_lib.served import scheduler_stats

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("whisper", __doc__)
    p.add_argument("--engine", choices=("torch", "openvino"), default="torch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=30.0, help="audio length")
    p.add_argument("--concurrency", default="4,8", help="comma-separated request counts sent at once")
    return p.parse_args(argv)


def _median_seconds(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _offline(engine: str, path: Path, samples: Any, rounds: int, cache: Path) -> tuple[float, int]:
    from hfd.backends.whisper_common import TranscribeOptions

    opts = daemon_load_options(path, engine, cache, task="transcribe")
    if engine == "torch":
        from hfd.backends import whisper_torch as mod
    else:
        from hfd.backends import whisper_openvino as mod  # type: ignore[no-redef]
    model: Any = mod.load(opts)
    model.transcribe(samples, TranscribeOptions(language="en"))  # warm-up
    seconds = _median_seconds(lambda: model.transcribe(samples, TranscribeOptions(language="en")), rounds)
    model.close()
    return seconds, opts.threads


def main(argv: list[str]) -> int:
    import httpx
    from support import media_models
    from support.daemon import running_daemon

    from hfd.daemon import audio

    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    counts = [int(n) for n in args.concurrency.split(",") if n.strip()]
    path = media_models.tiny_whisper()
    raw = media_models.encode_audio(media_models.tone(args.seconds), fmt="flac")
    samples = audio.decode(raw, max_seconds=3600)
    decode_s = _median_seconds(lambda: audio.decode(raw, max_seconds=3600), args.rounds)
    uploads = [media_models.encode_audio(media_models.tone(args.seconds, freq=200.0 + 37 * i), fmt="flac")
               for i in range(max(counts, default=0))]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "exports"
        offline, threads = _offline(args.engine, path, samples, args.rounds, cache)
        print(
            f"offline ({args.engine}, {threads} threads): {offline:.3f} s; decode {decode_s * 1000:.1f} ms",
            flush=True,
        )
        client = httpx.Client(timeout=600)
        with running_daemon(Path(tmp) / "d", {"whisper": path}, args=["--engine", args.engine, "--cache-dir", str(cache)],
                            timeout=600) as d:  # fmt: skip

            def post(body: bytes = raw) -> None:
                r = client.post(d.http + "/v1/audio/transcriptions", files={"file": ("a.flac", body, "audio/flac")},
                                data={"model": "whisper", "language": "en"})  # fmt: skip
                assert r.status_code == 200, r.text

            def scheduler() -> dict[str, Any]:
                return scheduler_stats(d.http, "whisper")

            post()  # load + warm-up
            served = _median_seconds(post, args.rounds)
            concurrent: dict[str, Any] = {}
            with ThreadPoolExecutor(max(counts, default=1)) as pool:
                for n in counts:
                    before = scheduler()
                    at_once = _median_seconds(lambda n=n: list(pool.map(post, uploads[:n])), args.rounds)
                    after = scheduler()
                    one_by_one = _median_seconds(
                        lambda n=n: [post(u) for u in uploads[:n]], max(1, args.rounds // 2)
                    )
                    concurrent[str(n)] = {
                        "at_once_s": round(at_once, 3), "one_at_a_time_s": round(one_by_one, 3),
                        "speedup": round(one_by_one / at_once, 2),
                        "requests_per_call": round((after["requests_finished"] - before["requests_finished"])
                                                   / max(1, after.get("calls", 0) - before.get("calls", 0)), 2),
                    }  # fmt: skip
                    print(f"{n} at once: {at_once:.3f} s, one at a time {one_by_one:.3f} s", flush=True)
        client.close()
    result = {
        "engine": args.engine, "audio_seconds": args.seconds, "rounds": args.rounds, "threads": threads,
        "offline_median_s": round(offline, 4), "decode_median_s": round(decode_s, 4),
        "served_median_s": round(served, 4), "ratio": round(offline / served, 3), "concurrent": concurrent,
        "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)],
    }  # fmt: skip
    print(json.dumps(result))
    out = (
        REPO / "bench-results" / ("whisper.json" if args.engine == "torch" else f"whisper-{args.engine}.json")
    )
    report.write_json(out, result)  # atomic, like every results file
    return 0
