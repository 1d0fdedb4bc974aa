"""Benchmark a chat's second turn: its time to first token against the first turn's, with the
engine's prefix caching on and off.

Turn one is a long user message (``--prompt-words``, about as many tokens with the bench
template) answered with ``--reply-tokens`` tokens; turn two sends turn one, the reply and a short
new message. With prefix caching on, the engine keeps turn one's K/V (the torch engine's
``backends/torch_prefix.py``, OpenVINO GenAI's own prefix cache) and prefills only the new
tokens. Each ``--conversations`` conversation is distinct, so turn one never reuses another's
text; they run one after another on an otherwise idle daemon, streamed over the HTTP door with
the official ``openai`` client. A daemon per setting (``prefix_caching`` on, then off), the engine
pinned with ``--engine``. Results: ``bench-results/multiturn-<engine>.json``. Run:
``.venv/bin/python scripts/bench multiturn --engine torch``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_lib import drivers, report
from bench_lib.cli import subcommand_parser
from bench_lib.workload import chat_messages

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

MODEL = "chat"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("multiturn", __doc__)
    p.add_argument("--engine", default="torch", choices=("torch", "openvino"))
    p.add_argument("--threads", type=int, default=0, help="engine threads (0: the daemon's automatic choice)")
    p.add_argument("--prompt-words", type=int, default=500, help="turn one's user message, in words")
    p.add_argument("--reply-tokens", type=int, default=32)
    p.add_argument("--conversations", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="the tiny test Llama and short turns: a smoke run")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results", help="where the JSON goes")
    return p.parse_args(argv)


async def _conversations(http: str, args: argparse.Namespace) -> list[dict[str, float]]:
    client = drivers.openai_client(http + "/v1", 2)
    out = []
    try:
        await _turn(client, chat_messages(words=8), 2)  # warm-up
        for _ in range(args.conversations):
            first = chat_messages(words=args.prompt_words)
            turn1, reply = await _turn(client, first, args.reply_tokens)
            second = [*first, {"role": "assistant", "content": reply}, *chat_messages(words=8)]
            turn2, _ = await _turn(client, second, args.reply_tokens)
            out.append({"turn1_ttft": turn1, "turn2_ttft": turn2})
    finally:
        await client.close()
    return out


async def _turn(client: Any, messages: list[dict[str, Any]], tokens: int) -> tuple[float, str]:
    """One streamed greedy turn: seconds to its first text, and the reply's text."""
    started = time.perf_counter()
    ttft: float | None = None
    text = []
    stream = await client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=tokens, temperature=0, stream=True,
        extra_body={"ignore_eos": True, "min_tokens": tokens},
    )  # fmt: skip
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                ttft = time.perf_counter() - started if ttft is None else ttft
                text.append(choice.delta.content)
    return ttft or 0.0, "".join(text)


def _run(root: Path, model: Path, args: argparse.Namespace, caching: bool) -> dict[str, Any]:
    from support.daemon import start_daemon

    extra = ["--engine", args.engine, "--log-level", "warning", "--cache-dir", str(REPO / ".cache" / "bench")]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    env = {"HFD_PREFIX_CACHING": "true" if caching else "false"}
    config = (
        f'[[models]]\nname = "{MODEL}"\nref = "{model}"\ntask = "generate"\npreload = true\nkeep_alive = -1\n'
    )
    daemon = start_daemon(
        root / ("on" if caching else "off"), {}, extra_config=config, args=extra, env=env, timeout=900
    )
    try:
        runs = asyncio.run(_conversations(daemon.http, args))
    finally:
        daemon.stop()
    median = {k: round(statistics.median(r[k] for r in runs) * 1000, 1) for k in ("turn1_ttft", "turn2_ttft")}
    return {"prefix_caching": caching, "median_ms": median, "runs": runs}


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from support.models import bench_llama, tiny_llama

    if args.quick:
        args.prompt_words, args.reply_tokens, args.conversations = min(args.prompt_words, 60), 4, 2
    model = tiny_llama() if args.quick else bench_llama()
    results: dict[str, Any] = {"engine": args.engine, "threads": args.threads, "prompt_words": args.prompt_words,
                               "reply_tokens": args.reply_tokens, "conversations": args.conversations}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hfd-bench-multiturn-") as tmp:
        for caching in (True, False):
            run = _run(Path(tmp), model, args, caching)
            results["on" if caching else "off"] = run
            m = run["median_ms"]
            print(f"{args.engine} prefix caching {'on ' if caching else 'off'}: turn 1 TTFT {m['turn1_ttft']} ms, "
                  f"turn 2 TTFT {m['turn2_ttft']} ms ({m['turn2_ttft'] / max(m['turn1_ttft'], 1e-9):.2f}x)")  # fmt: skip
    suffix = "-quick" if args.quick else ""
    report.write_json(args.out_dir / f"multiturn-{args.engine}{suffix}.json", results)
    return 0
