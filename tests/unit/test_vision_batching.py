"""Which vision chat requests share one batched ``generate`` (``backends/vlm_batch``): greedy
ones, unseeded sampled ones with the same sampling, never a seeded one; and how many one call
takes: ``max_running`` rows, their padded prompts within ``max_batched_tokens`` and prompts plus
new tokens within one context; a row over the bounds still runs, alone. No torch needed."""

from __future__ import annotations

import threading

from hfd.backends.base import SamplingParams
from hfd.backends.vlm_batch import VisionPrompt, VisionRow, batch_key, groups


def _row(tokens: int, max_tokens: int = 8) -> VisionRow:
    return VisionRow(VisionPrompt(ids=[1] * tokens, tensors={}), SamplingParams(max_tokens=max_tokens),
                     lambda ids: None, threading.Event())  # fmt: skip


def test_batch_keys() -> None:
    greedy = batch_key(SamplingParams(temperature=0, max_tokens=5))
    assert greedy == batch_key(SamplingParams(temperature=0, max_tokens=50, min_tokens=3, stop=("x",)))
    sampled = batch_key(SamplingParams(temperature=0.7, top_p=0.9))
    assert sampled is not None and sampled != greedy
    assert sampled == batch_key(SamplingParams(temperature=0.7, top_p=0.9, max_tokens=99))
    assert sampled != batch_key(SamplingParams(temperature=0.8, top_p=0.9))
    assert sampled != batch_key(SamplingParams(temperature=0.7, top_p=0.9, min_tokens=2))
    assert batch_key(SamplingParams(temperature=0.7, seed=1)) is None
    assert batch_key(SamplingParams(temperature=0, seed=1)) == greedy  # greedy ignores the seed


def test_groups_keep_order_within_the_bounds() -> None:
    rows = [_row(10), _row(30), _row(20), _row(5)]
    sizes = [[r.prompt.tokens for r in g] for g in groups(rows, max_rows=8, max_prefill=1000, context=1000)]
    assert sizes == [[10, 30, 20, 5]]
    # At most two rows a call.
    sizes = [[r.prompt.tokens for r in g] for g in groups(rows, max_rows=2, max_prefill=1000, context=1000)]
    assert sizes == [[10, 30], [20, 5]]
    # Padded prompts: 3 rows x 30 tokens > 80.
    sizes = [[r.prompt.tokens for r in g] for g in groups(rows, max_rows=8, max_prefill=80, context=1000)]
    assert sizes == [[10, 30], [20, 5]]
    # Prompt plus new tokens: 2 x (30 + 8) > 70.
    sizes = [[r.prompt.tokens for r in g] for g in groups(rows, max_rows=8, max_prefill=1000, context=70)]
    assert sizes == [[10], [30], [20, 5]]
    # A row over every bound runs alone.
    assert [len(g) for g in groups([_row(500), _row(1)], max_rows=1, max_prefill=10, context=10)] == [1, 1]
