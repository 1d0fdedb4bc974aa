"""What the benchmark sends: distinct chat prompts and sentences, and the sizes of each run.

Every request is distinct (a running index and words drawn from a seeded generator), so no
cache anywhere can answer one from another; the same generator feeds the offline runs, so
served and offline work on inputs of the same shape.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_WORDS = [
    "river",
    "mountain",
    "cloud",
    "window",
    "garden",
    "letter",
    "summer",
    "north",
    "ocean",
    "song",
    "salt",
    "light",
    "rain",
    "roof",
    "friend",
    "journey",
    "step",
    "model",
    "number",
    "token",
    "vector",
    "sentence",
    "weather",
    "breeze",
    "city",
    "market",
    "bridge",
    "forest",
    "lantern",
    "harbor",
    "meadow",
    "engine",
    "signal",
    "paper",
    "candle",
    "mirror",
    "valley",
    "island",
    "story",
]

_counter = itertools.count()


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def chat_messages(index: int | None = None, words: int = 12) -> list[dict[str, Any]]:
    """A distinct short chat: about 20 prompt tokens with the bench template."""
    i = next(_counter) if index is None else index
    rng = random.Random(i)
    return [{"role": "user", "content": f"Request {i}: write about {_words(rng, words)}."}]


def sentence(index: int | None = None) -> str:
    """A distinct sentence of about 15 words."""
    i = next(_counter) if index is None else index
    rng = random.Random(10_000_019 + i)
    return f"Sentence {i} tells of the {_words(rng, 13)}."


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    name: str
    gen_model: Callable[[], Path]
    embed_model: Callable[[], Path]
    gen_tokens: int  # completion tokens per request (fixed with ignore_eos + min_tokens)
    gen_batch: int  # the offline batch, and the served concurrency compared with it
    gen_levels: tuple[int, ...]
    gen_rounds: int  # requests per client at each level (at least 3 requests in all)
    embed_batch: int  # the offline batch size
    embed_levels: tuple[int, ...]
    embed_requests: Callable[[int], int]  # requests at a concurrency level
    embed_offline_inputs: int
    ttft_streams: int  # long generations running while the short request arrives
    ttft_long_tokens: int
    ttft_short_tokens: int
    ttft_samples: int


def full_plan() -> Plan:
    from tests.support.models import bench_llama, minilm

    return Plan(
        name="full",
        gen_model=bench_llama,
        embed_model=minilm,
        gen_tokens=64,
        gen_batch=32,
        gen_levels=(1, 8, 32, 64),
        gen_rounds=2,
        embed_batch=32,
        embed_levels=(1, 8, 32, 64),
        embed_requests=lambda c: max(96, 8 * c),
        embed_offline_inputs=512,
        ttft_streams=32,
        ttft_long_tokens=512,
        ttft_short_tokens=4,
        ttft_samples=8,
    )


def quick_plan() -> Plan:
    from tests.support.models import tiny_bert, tiny_llama

    return Plan(
        name="quick",
        gen_model=tiny_llama,
        embed_model=tiny_bert,
        gen_tokens=8,
        gen_batch=4,
        gen_levels=(1, 4),
        gen_rounds=1,
        embed_batch=8,
        embed_levels=(1, 4),
        embed_requests=lambda c: 8 * c,
        embed_offline_inputs=32,
        ttft_streams=4,
        ttft_long_tokens=180,
        ttft_short_tokens=2,
        ttft_samples=2,
    )
