"""The constraint hook of the torch sampler: a row with a TokenMatcher only ever gets the tokens
its matcher allows, finishes with "stop" when the matcher is complete, and shares its batch with
unconstrained rows without changing what they compute."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from support.causal_models import causal_model  # noqa: E402
from support.models import tiny_llama  # noqa: E402

from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.constraints import TokenMatcher  # noqa: E402
from hfd.backends.torch_backend import TorchBackend  # noqa: E402
from hfd.backends.torch_sampling import RowSampling, sample  # noqa: E402

ALLOWED = (5, 7)


class OnlyThese:
    """A grammar of ``length`` tokens, each one of ``allowed``."""

    def __init__(self, allowed: tuple[int, ...], length: int) -> None:
        self.allowed, self.length = allowed, length
        self.accepted: list[int] = []

    def fill_mask(self, bitmask: Any, row: int) -> None:
        bitmask[row] = 0
        for t in self.allowed:
            word, bit = divmod(t, 32)
            value = int(bitmask[row, word]) | (1 << bit)
            bitmask[row, word] = value - (1 << 32) if value >= 1 << 31 else value  # int32 wrap

    def accept(self, token_id: int) -> None:
        assert token_id in self.allowed
        self.accepted.append(token_id)

    @property
    def finished(self) -> bool:
        return len(self.accepted) >= self.length


class Compiled:
    """What ``compile_constraint`` returns: a fresh matcher per sequence."""

    def __init__(self, allowed: tuple[int, ...], length: int) -> None:
        self.allowed, self.length = allowed, length
        self.made: list[OnlyThese] = []

    def matcher(self) -> OnlyThese:
        m = OnlyThese(self.allowed, self.length)
        self.made.append(m)
        return m


def test_the_hand_written_matcher_is_a_token_matcher() -> None:
    assert isinstance(OnlyThese(ALLOWED, 1), TokenMatcher)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sample_masks_only_the_constrained_rows(temperature: float) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 70)
    logits[:, 69] = 50.0  # the unconstrained favourite, past the last full word of the bitmask
    gens = [torch.Generator().manual_seed(i) for i in range(3)] if temperature else [None] * 3
    matcher = OnlyThese((5, 33, 64), 100)
    rows = [
        RowSampling(temperature, 1.0, gens[0], False),
        RowSampling(temperature, 1.0, gens[1], False, matcher=matcher),
        RowSampling(temperature, 1.0, gens[2], False),
    ]
    for _ in range(20):
        tokens = sample(logits.clone(), rows, None)
        assert tokens[1] in (5, 33, 64)
        assert tokens[0] == tokens[2] == 69
    assert len(matcher.accepted) == 20


def test_bit_31_and_a_vocab_that_is_not_a_multiple_of_32() -> None:
    logits = torch.zeros(1, 40)
    matcher = OnlyThese((31,), 1)
    assert sample(logits, [RowSampling(0.0, 1.0, None, False, matcher=matcher)], None) == [31]


def drive(model: GenerationModel, jobs: dict[int, tuple[list[int], SamplingParams]]) -> tuple[dict, dict]:
    tokens: dict[int, list[int]] = {}
    reasons: dict[int, str] = {}
    for sid, (prompt, params) in jobs.items():
        model.add(sid, prompt, params)
    while model.has_work():
        for out in model.step():
            tokens.setdefault(out.seq_id, []).extend(out.token_ids)
            if out.finished:
                reasons[out.seq_id] = out.finished
    return tokens, reasons


@pytest.fixture(scope="module", params=["kv-cache", "recurrent"])
def gen(request: pytest.FixtureRequest) -> Iterator[GenerationModel]:
    path: Path = tiny_llama() if request.param == "kv-cache" else causal_model("mamba")
    g = TorchBackend().load_generator(LoadOptions(path=path, task="generate", max_running=8))
    yield g
    g.close()


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_a_constrained_row_in_a_mixed_batch(gen: GenerationModel, temperature: float) -> None:
    prompt_a = gen.encode_prompt("The quick brown fox jumps over the lazy dog.")
    prompt_b = gen.encode_prompt("Hello")
    free = SamplingParams(max_tokens=12, temperature=temperature, seed=3, ignore_eos=True)
    alone, _ = drive(gen, {1: (prompt_a, free)})

    compiled = Compiled(ALLOWED, length=6)
    constrained = SamplingParams(max_tokens=12, temperature=temperature, seed=4, constraint=compiled)
    tokens, reasons = drive(
        gen, {1: (prompt_a, free), 2: (prompt_b, constrained), 3: (prompt_b, constrained)}
    )

    assert tokens[1] == alone[1]
    assert reasons[1] == "length"
    for sid in (2, 3):
        assert set(tokens[sid]) <= set(ALLOWED)
        assert len(tokens[sid]) == 6  # finished by the grammar, not by max_tokens
        assert reasons[sid] == "stop"
    # One matcher per sequence, each advanced by its own tokens only.
    assert len(compiled.made) == 2
    assert sorted(m.accepted for m in compiled.made) == sorted([tokens[2], tokens[3]])
