"""Benchmark Whisper transcription: 30 s of audio served by ``hfd serve`` over HTTP (multipart
upload, the daemon decodes it with PyAV) against the same engine offline on the same samples
(transformers' ``generate``, greedy; or OpenVINO GenAI's ``WhisperPipeline.generate``).

The model is the random-weight tiny Whisper of the tests (``tests/support/media_models.py``;
its generation config stops after 20 tokens), so the figure is what serving adds around one
window: upload, decoding, scheduling. Reports the median seconds of each and the ratio
offline / served (1.0: serving costs nothing). Results go to ``bench-results/whisper.json``.
Run: ``.venv/bin/python scripts/bench whisper [--engine torch|openvino] [--rounds N]``.
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("whisper", __doc__)
    p.add_argument("--engine", choices=("torch", "openvino"), default="torch")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=30.0, help="audio length")
    return p.parse_args(argv)


def _offline(engine: str, path: Path, samples: Any, rounds: int, cache: Path) -> list[float]:
    from hfd.backends.base import LoadOptions
    from hfd.backends.whisper_common import TranscribeOptions

    opts = LoadOptions(
        path=path, task="transcribe", device="cpu" if engine == "torch" else "CPU", cache_dir=cache
    )  # type: ignore[arg-type]
    if engine == "torch":
        from hfd.backends import whisper_torch as mod
    else:
        from hfd.backends import whisper_openvino as mod  # type: ignore[no-redef]
    model: Any = mod.load(opts)
    model.transcribe(samples, TranscribeOptions(language="en"))  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        model.transcribe(samples, TranscribeOptions(language="en"))
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str]) -> int:
    import httpx
    from support import media_models
    from support.daemon import start_daemon

    from hfd.daemon import audio

    args = parse_args(argv)
    path = media_models.tiny_whisper()
    raw = media_models.encode_audio(media_models.tone(args.seconds), fmt="flac")
    samples = audio.decode(raw, max_seconds=3600)
    with tempfile.TemporaryDirectory() as tmp:
        offline = _offline(args.engine, path, samples, args.rounds, Path(tmp) / "exports")
        d = start_daemon(Path(tmp) / "d", {"whisper": path}, args=["--engine", args.engine])
        try:

            def post() -> None:
                r = httpx.post(d.http + "/v1/audio/transcriptions", files={"file": ("a.flac", raw, "audio/flac")},
                               data={"model": "whisper", "language": "en"}, timeout=600)  # fmt: skip
                assert r.status_code == 200, r.text

            post()  # load + warm-up
            served = []
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                post()
                served.append(time.perf_counter() - t0)
        finally:
            d.stop()
    result = {
        "engine": args.engine, "audio_seconds": args.seconds, "rounds": args.rounds,
        "offline_median_s": round(statistics.median(offline), 4),
        "served_median_s": round(statistics.median(served), 4),
    }  # fmt: skip
    result["ratio"] = round(result["offline_median_s"] / result["served_median_s"], 3)
    print(json.dumps(result))
    out = REPO / "bench-results" / "whisper.json"
    report.write_json(out, result)  # atomic, like every results file
    return 0
