"""Prefix reuse on the torch engine: a chat's second turn starts from the K/V its first turn left
(``backends/torch_prefix.py``) and prefills only the new tokens, and its greedy reply equals
transformers' ``generate`` on the whole prompt and the engine with reuse off."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the torch engine")
pytest.importorskip("transformers", reason="the torch engine")

import torch
import transformers
from support.causal_models import causal_model
from support.engine_steps import drive
from support.models import tiny_llama

from hfd.backends.base import LoadOptions, SamplingParams
from hfd.backends.torch_backend import TorchBackend, TorchGenerator
from hfd.backends.torch_prefix import PrefixStore

N = 8
GREEDY = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True, min_tokens=N)
FIRST = "The quick brown fox jumps over the lazy dog while the rain falls on the roof of the old mill."
NEXT = " And then what happened to the fox?"
OTHER = "Lanterns by the harbor light the way home for every boat."


def _load(path: Path, **extra: object) -> TorchGenerator:
    return TorchBackend().load_generator(
        LoadOptions(path=path, task="generate", max_running=8, dtype="float32", extra=dict(extra))
    )


@pytest.fixture(scope="module")
def llama() -> Path:
    return tiny_llama()


@pytest.fixture(scope="module")
def off(llama: Path) -> Iterator[TorchGenerator]:
    model = _load(llama, prefix_caching=False)
    yield model
    model.close()


def _tokens(gen: TorchGenerator, jobs: dict[int, tuple[list[int], SamplingParams]]) -> dict[int, list[int]]:
    return {sid: [t for o in outs for t in o.token_ids] for sid, outs in drive(gen, jobs).items()}


def _hf_greedy(path: Path, prompts: list[list[int]]) -> list[list[int]]:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path, local_files_only=True, dtype=torch.float32
    )
    out = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = model.eval().generate(
                torch.tensor([prompt]), max_new_tokens=N, min_new_tokens=N, do_sample=False, pad_token_id=0
            )
            out.append([int(t) for t in ids[0, len(prompt) :]])
    return out


def _second_turn(gen: TorchGenerator, first: list[int], text: str) -> tuple[list[int], int]:
    """Turn one of a conversation, then turn two's prompt (turn one, its reply, new text) and
    how many of its tokens turn one left in the cache (all but the reply's last)."""
    reply = _tokens(gen, {0: (first, GREEDY)})[0]
    return [*first, *reply, *gen.encode_prompt(text)[1:]], len(first) + len(reply) - 1


def test_second_turn_prefills_only_the_new_tokens(llama: Path, off: TorchGenerator) -> None:
    gen = _load(llama)
    try:
        first = gen.encode_prompt(FIRST)
        second, cached = _second_turn(gen, first, NEXT)
        before = gen.prefilled_tokens
        got = _tokens(gen, {1: (second, GREEDY)})[1]
        assert gen.prefilled_tokens - before == len(second) - cached
        assert gen._batcher.prefixes is not None and gen._batcher.prefixes.stats.hits == 1
        expected = _tokens(off, {1: (second, GREEDY)})[1]
        assert got == expected == _hf_greedy(llama, [second])[0]
        # Turn three reuses turn two's prompt and reply; the entry turn two extended is gone.
        third = [*second, *got, *gen.encode_prompt(OTHER)[1:]]
        before = gen.prefilled_tokens
        assert _tokens(gen, {2: (third, GREEDY)})[2] == _tokens(off, {2: (third, GREEDY)})[2]
        assert gen.prefilled_tokens - before == len(third) - (len(second) + N - 1)
        assert len(gen._batcher.prefixes) == 1
    finally:
        gen.close()


def test_rows_with_different_reuse_share_one_prefill(llama: Path, off: TorchGenerator) -> None:
    gen = _load(llama)
    try:
        a, _ = _second_turn(gen, gen.encode_prompt(FIRST), NEXT)
        b, _ = _second_turn(gen, gen.encode_prompt(OTHER), " Tell me more about the boats, please.")
        fresh = gen.encode_prompt("Rain on the roof")
        seeded = SamplingParams(max_tokens=N, temperature=0.9, top_p=0.95, ignore_eos=True, seed=7)
        jobs = {10: (a, GREEDY), 11: (b, GREEDY), 12: (fresh, GREEDY), 13: (b, seeded)}
        hits = gen._batcher.prefixes.stats.hits  # type: ignore[union-attr]
        got = _tokens(gen, jobs)
        assert gen._batcher.prefixes.stats.hits == hits + 2  # type: ignore[union-attr]  # a and b, once each
        assert got == _tokens(off, jobs)
    finally:
        gen.close()


def test_a_cancelled_sequence_is_kept_too(llama: Path, off: TorchGenerator) -> None:
    gen = _load(llama)
    try:
        first = gen.encode_prompt(FIRST)
        gen.add(0, first, GREEDY)
        reply: list[int] = []
        while len(reply) < 4:
            reply += [t for o in gen.step() for t in o.token_ids]
        gen.cancel(0)  # as the scheduler does on a stop string
        second = [*first, *reply, *gen.encode_prompt(NEXT)[1:]]
        before = gen.prefilled_tokens
        got = _tokens(gen, {1: (second, GREEDY)})[1]
        assert gen.prefilled_tokens - before == len(second) - (len(first) + len(reply) - 1)
        assert got == _tokens(off, {1: (second, GREEDY)})[1]
    finally:
        gen.close()


def test_echo_and_off_and_a_tiny_budget_prefill_everything(llama: Path, off: TorchGenerator) -> None:
    tiny = _load(llama, prefix_cache_bytes=1)
    gen = _load(llama)
    try:
        second, _ = _second_turn(tiny, tiny.encode_prompt(FIRST), NEXT)
        before = tiny.prefilled_tokens
        assert _tokens(tiny, {1: (second, GREEDY)})[1] == _tokens(off, {1: (second, GREEDY)})[1]
        assert tiny.prefilled_tokens - before == len(second)  # nothing fitted the budget
        assert off._batcher.prefixes is None
        # A prompt's logprobs need every prompt position: an echo prefills the whole prompt.
        second, _ = _second_turn(gen, gen.encode_prompt(FIRST), NEXT)
        echo = dataclasses.replace(GREEDY, logprobs=1, prompt_logprobs=1)
        before = gen.prefilled_tokens
        got = drive(gen, {1: (second, echo)})[1]
        assert gen.prefilled_tokens - before == len(second)
        assert got[0].prompt_logprobs == drive(off, {1: (second, echo)})[1][0].prompt_logprobs
    finally:
        tiny.close()
        gen.close()


@pytest.mark.parametrize("family", ["mistral", "gemma2"])
def test_sliding_window_models_reuse_exactly(family: str) -> None:
    """Mistral's window and Gemma 2's per-layer windows (16 tokens, shorter than the prompts):
    the kept K/V are those of every column, the windows a mask over positions."""
    path = causal_model(family)
    gen, ref = _load(path), _load(path, prefix_caching=False)
    try:
        second, cached = _second_turn(gen, gen.encode_prompt(FIRST), " Then?")
        assert len(second) - cached < 16 < cached  # the window cuts across the kept tokens
        before = gen.prefilled_tokens
        got = _tokens(gen, {1: (second, GREEDY)})[1]
        assert gen.prefilled_tokens - before == len(second) - cached
        assert got == _tokens(ref, {1: (second, GREEDY)})[1] == _hf_greedy(path, [second])[0]
    finally:
        gen.close()
        ref.close()


def test_recurrent_models_keep_no_prefixes() -> None:
    gen = _load(causal_model("mamba"))
    try:
        assert not hasattr(gen._batcher, "prefixes")
    finally:
        gen.close()


def test_store_keeps_the_longest_and_evicts_the_least_recently_used() -> None:
    def kv(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, n, 2), torch.zeros(1, n, 2))]

    size = 2 * 4 * 2  # bytes per token: K and V, 2 floats each
    store = PrefixStore(budget_bytes=10 * size, min_tokens=1)
    store.put([1, 2, 3], kv(3), room=store.budget_bytes)
    store.put([1, 2, 3, 4, 5], kv(5), room=store.budget_bytes)  # covers [1, 2, 3]
    assert len(store) == 1 and store.nbytes == 5 * size
    store.put([1, 2], kv(2), room=store.budget_bytes)  # inside the kept one: nothing new
    assert len(store) == 1
    found = store.lookup([1, 2, 3, 9])
    assert found is not None and found[1] == 3
    assert store.lookup([1, 2, 3, 4, 5])[1] == 4  # type: ignore[index]  # the last token is prefilled
    assert store.lookup([7, 1, 2]) is None
    store.put([7, 8, 9, 10], kv(4), room=store.budget_bytes)
    store.lookup([1, 2, 3, 4])  # [1..5] is now the most recently used
    store.put([6, 6, 6], kv(3), room=store.budget_bytes)  # 12 tokens > 10: the oldest goes
    assert store.lookup([7, 8, 9, 10, 11]) is None
    assert store.lookup([1, 2, 3, 4, 5, 6]) is not None
    assert store.nbytes == 8 * size and store.stats.evicted == 1
