#!/usr/bin/env python
"""Resident memory of the OpenVINO engine process under load, beside its KV cache.

Loads a generator on the OpenVINO engine (the pipeline in its engine process, warmed up at
load), keeps ``--concurrency`` requests with distinct random prompts in flight for
``--seconds``, and prints one JSON line every ``--every`` seconds: requests finished, the
engine process's RSS, the KV cache GenAI reports allocated, and the cache's planned size.

    .venv/bin/python scripts/openvino_kv_rss.py --seconds 100               # bench Llama
    .venv/bin/python scripts/openvino_kv_rss.py --seconds 100 --kv-gb 0.125 # a smaller cap

docs/engines.md ("KV cache and memory") has the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

MIB = 1024 * 1024


def main() -> int:
    from support.models import bench_llama, tiny_llama

    from hfd.backends.base import LoadOptions, SamplingParams
    from hfd.backends.openvino_backend import OpenVINOBackend

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("bench", "tiny"), default="bench")
    ap.add_argument("--seconds", type=float, default=100.0)
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--kv-gb", type=float, default=None)
    ap.add_argument("--prefix-caching", choices=("on", "off"), default="on")
    ap.add_argument("--cache-dir", type=Path, default=Path(".cache/openvino-kv-rss"))
    args = ap.parse_args()

    path = bench_llama() if args.model == "bench" else tiny_llama()
    extra: dict[str, object] = {"prefix_caching": args.prefix_caching == "on"}
    if args.kv_gb:
        extra["kv_cache_gb"] = args.kv_gb
    opts = LoadOptions(path=path, task="generate", threads=args.threads, max_running=args.concurrency,
                       cache_dir=args.cache_dir, extra=extra)  # fmt: skip
    gen = OpenVINOBackend().load_generator(opts)
    pipeline = gen._pipeline
    assert pipeline is not None
    rng = random.Random(0)
    vocab = max(16, gen._vocab or 1000)
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0, ignore_eos=True)

    def sample(t0: float, done: int) -> None:
        print(json.dumps({
            "t": round(time.monotonic() - t0, 1), "requests": done,
            "rss_mib": round(pipeline.rss_bytes() / MIB, 1),
            "kv_allocated_mib": round(gen.allocated_kv_bytes() / MIB, 1),
            "kv_planned_mib": round(gen.kv_cache_bytes / MIB, 1),
        }), flush=True)  # fmt: skip

    t0 = time.monotonic()
    sample(t0, 0)  # after load and warm-up
    next_id, done, running = 0, 0, set()
    next_sample = t0 + args.every
    while time.monotonic() - t0 < args.seconds:
        while len(running) < args.concurrency:
            ids = [rng.randrange(4, vocab) for _ in range(args.prompt_tokens)]
            gen.add(next_id, ids, params)
            running.add(next_id)
            next_id += 1
        for out in gen.step():
            if out.finished is not None:
                running.discard(out.seq_id)
                done += 1
        if time.monotonic() >= next_sample:
            sample(t0, done)
            next_sample += args.every
    sample(t0, done)
    gen.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
