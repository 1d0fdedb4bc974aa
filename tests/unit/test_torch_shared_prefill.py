"""A request's n rows share one prefill on the torch engine: the prompt runs once, the other rows
start from copies of its cache row and last logits, and each row then samples on its own. The
rows give what they gave when each was prefilled separately, beside other requests' rows too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

pytest.importorskip("torch", reason="the torch engine")
pytest.importorskip("transformers", reason="the torch engine")

from support.engine_steps import drive
from support.models import tiny_llama

from hfd.backends.base import LoadOptions, SamplingParams
from hfd.backends.torch_backend import TorchBackend, TorchGenerator

FOX = "The quick brown fox jumps over the lazy dog."
SEEDED = SamplingParams(max_tokens=8, temperature=0.9, top_p=0.95, ignore_eos=True, seed=1234)
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
# Recorded before the prompt was shared, when each of the four rows prefilled it separately
# (seeds 1234 .. 1237, the offsets daemon/choices.py gives the n choices).
BEFORE = [
    [19, 282, 227, 289, 61, 545, 19, 337],
    [129, 246, 708, 478, 533, 165, 336, 640],
    [35, 150, 393, 579, 273, 110, 136, 380],
    [144, 3, 357, 165, 135, 441, 317, 320],
]


@pytest.fixture(scope="module")
def gen() -> Iterator[TorchGenerator]:
    # Prefix reuse off: these tests count the tokens one prefill runs, and FOX is run again and
    # again here (reusing a finished row's K/V: test_torch_prefix_reuse.py).
    opts = LoadOptions(
        path=tiny_llama(), task="generate", max_running=8, dtype="float32", extra={"prefix_caching": False}
    )
    model = TorchBackend().load_generator(opts)
    yield model
    model.close()


def _choices(params: SamplingParams, n: int, first: int = 0) -> dict[int, SamplingParams]:
    """The n sequences of one request, seeded as daemon/choices.py seeds them."""
    return {
        first + j: params
        if params.seed is None or j == 0
        else dataclasses.replace(params, seed=params.seed + j)
        for j in range(n)
    }


def _tokens(gen: TorchGenerator, jobs: dict[int, tuple[list[int], SamplingParams]]) -> dict[int, list[int]]:
    return {sid: [t for o in outs for t in o.token_ids] for sid, outs in drive(gen, jobs).items()}


def test_n_rows_prefill_the_prompt_once(gen: TorchGenerator) -> None:
    prompt = gen.encode_prompt(FOX)
    assert prompt == [1, 343, 591, 640, 542, 587, 503, 269, 625, 576, 20]  # the prompt BEFORE used
    before = gen.prefilled_tokens
    got = _tokens(gen, {sid: (prompt, p) for sid, p in _choices(SEEDED, 4).items()})
    assert gen.prefilled_tokens - before == len(prompt)  # not 4x
    assert [got[j] for j in range(4)] == BEFORE


def test_greedy_n_rows_equal_the_single_reply(gen: TorchGenerator) -> None:
    prompt = gen.encode_prompt(FOX)
    alone = _tokens(gen, {0: (prompt, GREEDY)})[0]
    got = _tokens(gen, {sid: (prompt, p) for sid, p in _choices(GREEDY, 4).items()})
    assert [got[j] for j in range(4)] == [alone] * 4


def test_mixed_batch_gives_each_request_its_tokens_alone(gen: TorchGenerator) -> None:
    fox, rain, hello = (gen.encode_prompt(t) for t in (FOX, "Rain on the roof", "Hello"))
    other = dataclasses.replace(SEEDED, seed=99, temperature=1.0)
    alone_rain = _tokens(gen, {0: (rain, GREEDY)})[0]
    alone_hello = _tokens(gen, {0: (hello, other)})[0]
    before = gen.prefilled_tokens
    jobs: dict[int, tuple[list[int], SamplingParams]] = {10: (rain, GREEDY)}
    jobs.update({sid: (fox, p) for sid, p in _choices(SEEDED, 3, first=20).items()})
    jobs[30] = (hello, other)
    got = _tokens(gen, jobs)
    assert gen.prefilled_tokens - before == len(fox) + len(rain) + len(hello)
    assert [got[20 + j] for j in range(3)] == BEFORE[:3]
    assert got[10] == alone_rain
    assert got[30] == alone_hello


def test_shared_rows_each_echo_the_prompt_logprobs(gen: TorchGenerator) -> None:
    prompt = gen.encode_prompt(FOX)
    echo = dataclasses.replace(GREEDY, max_tokens=2, logprobs=1, prompt_logprobs=1)
    alone = drive(gen, {0: (prompt, echo)})[0][0].prompt_logprobs
    outs = drive(gen, {1: (prompt, echo), 2: (prompt, echo)})
    assert alone is not None and len(alone) == len(prompt)
    assert outs[1][0].prompt_logprobs == alone
    assert outs[2][0].prompt_logprobs == alone


# The recurrent batcher (state-space and hybrid models): recorded the same way, three seeded
# choices of FOX beside a greedy "Rain on the roof", six tokens each.
RECURRENT_BEFORE = {
    "mamba": ([[7, 208, 177, 239, 80, 376], [46, 93, 492, 331, 410, 161], [7, 38, 230, 258, 49, 92]],
              [63, 260, 80, 410, 336, 7]),
    "lfm2": ([[39, 190, 22, 156, 101, 420], [198, 126, 493, 221, 398, 286], [89, 137, 245, 338, 20, 142]],
             [42, 403, 487, 205, 156, 196]),
}  # fmt: skip


@pytest.mark.parametrize(("family", "layout"), [("mamba", "recurrent"), ("lfm2", "hybrid")])
def test_recurrent_rows_share_the_prefill(family: str, layout: str) -> None:
    from support.causal_models import causal_model

    model = TorchBackend().load_generator(
        LoadOptions(path=causal_model(family), task="generate", max_running=8, dtype="float32")
    )
    try:
        assert getattr(model._batcher, "layout", None) == layout
        fox, rain = model.encode_prompt(FOX), model.encode_prompt("Rain on the roof")
        seeded = dataclasses.replace(SEEDED, max_tokens=6)
        greedy = dataclasses.replace(GREEDY, max_tokens=6)
        jobs = {sid: (fox, p) for sid, p in _choices(seeded, 3).items()}
        jobs[9] = (rain, greedy)
        got = _tokens(model, jobs)
        assert model.prefilled_tokens == len(fox) + len(rain)  # fox once, not 3x
        choices, alone = RECURRENT_BEFORE[family]
        assert [got[j] for j in range(3)] == choices
        assert got[9] == alone
        same = _tokens(model, {sid: (fox, p) for sid, p in _choices(greedy, 3).items()})
        assert same[0] == same[1] == same[2] == _tokens(model, {0: (fox, greedy)})[0]
    finally:
        model.close()
