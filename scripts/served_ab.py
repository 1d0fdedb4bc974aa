#!/usr/bin/env python
"""Two configurations of one model, served side by side and measured in turns.

Starts two ``hfd serve`` daemons (one model each, so neither evicts the other), then at each
level runs ``--rounds`` rounds of closed-loop completions over HTTP with the ``openai`` client,
alternating A and B in ABBA order so the box's drift cancels, and prints B / A per round with
its median, lowest and highest. For a default that differs from a model option by one setting:
A is the model with ``--a`` options, B with ``--b`` (TOML inline tables); for a daemon setting,
``--a-flags`` / ``--b-flags`` (its ``hfd serve`` flags).

    .venv/bin/python scripts/served_ab.py --large --weight-format int8 \\
        --a '{ dynamic_quantization_group_size = 32 }' --b '{}'
    .venv/bin/python scripts/served_ab.py --stream --levels 1 --rounds 12 \\
        --a-flags '--stream-interval-ms 0' --b-flags '--stream-interval-ms 10'

Each request: a short prompt, 64 greedy tokens (``ignore_eos``), response cache off; with
``--stream``, a streamed chat completion (its tokens counted from the usage chunk).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "scripts")]


def model_config(name: str, ref: Path, weight_format: str | None, options: str) -> str:
    text = f'[[models]]\nname = "{name}"\nref = "{ref}"\ntask = "generate"\npreload = true\nkeep_alive = -1\n'
    if weight_format:
        text += f'weight_format = "{weight_format}"\n'
    return text + f"options = {options}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="the 496M-parameter bench Llama (else the 56M one)")
    ap.add_argument("--weight-format", default=None)
    ap.add_argument("--a", default="{}", help="model options of A, a TOML inline table")
    ap.add_argument("--b", default="{}", help="model options of B, a TOML inline table")
    ap.add_argument("--a-flags", default="", help="more hfd serve flags of A's daemon")
    ap.add_argument("--b-flags", default="", help="more hfd serve flags of B's daemon")
    ap.add_argument(
        "--stream", action="store_true", help="streamed chat completions (else plain completions)"
    )
    ap.add_argument("--levels", default="1,8", help="concurrent streams, comma-separated")
    ap.add_argument("--rounds", type=int, default=6, help="rounds per level (even: ABBA)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument(
        "--requests", type=int, default=0, help="requests per round (0: twice the streams, at least 3)"
    )
    args = ap.parse_args()
    if args.rounds % 2:
        ap.error("--rounds must be even (ABBA pairs)")

    import openai
    from bench_lib import load
    from support.daemon import start_daemon
    from support.models import bench_llama, bench_llama_large

    ref = bench_llama_large() if args.large else bench_llama()
    with tempfile.TemporaryDirectory(prefix="hfd-served-ab-") as tmp:
        work = Path(tmp)
        daemons: dict[str, Any] = {}
        try:
            for name, options, more in (("A", args.a, args.a_flags), ("B", args.b, args.b_flags)):
                (work / name).mkdir()
                config = model_config(name, ref, args.weight_format, options)
                flags = [
                    "--log-level",
                    "warning",
                    "--cache-dir",
                    str(work / "cache"),
                    "--cache-enabled",
                    "false",
                    *shlex.split(more),
                ]
                daemons[name] = start_daemon(work / name, {}, extra_config=config, args=flags, timeout=900)
            for d in daemons.values():
                load.settle(d.proc.pid)
            clients = {
                n: openai.OpenAI(base_url=d.base_url, api_key="x", timeout=600) for n, d in daemons.items()
            }

            def one(name: str, i: int) -> int:
                if args.stream:
                    stream = clients[name].chat.completions.create(
                        model=name, messages=[{"role": "user", "content": f"request {i} about the sea"}],
                        max_tokens=args.tokens, temperature=0, stream=True, stream_options={"include_usage": True},
                        extra_body={"ignore_eos": True, "cache": False},
                    )  # fmt: skip
                    produced = 0
                    for chunk in stream:
                        if chunk.usage is not None:
                            produced = chunk.usage.completion_tokens
                    return produced
                r = clients[name].completions.create(
                    model=name, prompt=f"request {i} about the sea and", max_tokens=args.tokens, temperature=0,
                    extra_body={"ignore_eos": True, "cache": False},
                )  # fmt: skip
                assert r.usage is not None
                return int(r.usage.completion_tokens)

            def level(name: str, streams: int) -> float:
                requests = args.requests or max(3, 2 * streams)
                started = time.perf_counter()
                with ThreadPoolExecutor(streams) as pool:
                    tokens = sum(pool.map(lambda i: one(name, i), range(requests)))
                return tokens / (time.perf_counter() - started)

            for name in daemons:
                level(name, 1)  # warm-up
            for streams in (int(x) for x in args.levels.split(",")):
                rates: dict[str, list[float]] = {"A": [], "B": []}
                for r in range(args.rounds):
                    for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                        rates[name].append(level(name, streams))
                ratios = [b / a for a, b in zip(rates["A"], rates["B"], strict=True)]
                print(json.dumps({
                    "streams": streams, "a": args.a, "b": args.b, "a_flags": args.a_flags, "b_flags": args.b_flags,
                    "stream": args.stream,
                    "a_tok_s": [round(x, 1) for x in rates["A"]], "b_tok_s": [round(x, 1) for x in rates["B"]],
                    "b_over_a_median": round(statistics.median(ratios), 3),
                    "b_over_a_min": round(min(ratios), 3), "b_over_a_max": round(max(ratios), 3),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }), flush=True)  # fmt: skip
        finally:
            for d in daemons.values():
                d.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
