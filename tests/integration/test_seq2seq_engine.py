"""The torch seq2seq engine against transformers' own ``generate`` on tiny T5, BART and Marian
models: greedy tokens identical (num_beams=1, do_sample=False), alone and in a continuously
batched run where requests of different lengths join at different steps and leave early."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("torch", reason="the seq2seq engine runs on torch")
pytest.importorskip("transformers", reason="transformers' generate is the oracle")

from support.seq2seq_models import FAMILIES, seq2seq_model

from hfd.backends import capabilities
from hfd.backends.base import LoadOptions, SamplingParams
from hfd.backends.seq2seq_torch import Seq2SeqGenerator, last_user_text, load
from hfd.client.errors import ContextLengthExceeded, InvalidRequest

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello",
    "What is the capital of France? Paris is the capital of France. How many legs does a spider have?",
    "Translate hello into Spanish:",
    "Rivers flow to the sea",
]
MAX = 24
GREEDY = SamplingParams(max_tokens=MAX, temperature=0.0)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def oracle(family: str) -> dict[str, list[int]]:
    """transformers' greedy output per text, without the decoder start token and cut after eos."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = seq2seq_model(family)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    out: dict[str, list[int]] = {}
    for text in TEXTS:
        enc = tok(text, return_tensors="pt")
        ids = model.generate(**enc, max_new_tokens=MAX, do_sample=False, num_beams=1)[0, 1:].tolist()
        if tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id) + 1]
        out[text] = ids
    return out


@pytest.fixture()
def engine(family: str) -> Iterator[Seq2SeqGenerator]:
    gen = load(LoadOptions(path=seq2seq_model(family), task="seq2seq", max_running=8))
    yield gen
    gen.close()


def _drain(gen: Any, produced: dict[int, list[int]], finished: dict[int, str]) -> None:
    for out in gen.step():
        produced.setdefault(out.seq_id, []).extend(out.token_ids)
        if out.finished is not None:
            finished[out.seq_id] = out.finished


def _alone(gen: Any, text: str) -> list[int]:
    produced: dict[int, list[int]] = {}
    finished: dict[int, str] = {}
    gen.add(0, gen.encode_prompt(text), GREEDY)
    while gen.has_work():
        _drain(gen, produced, finished)
    return produced[0]


def test_greedy_tokens_equal_transformers_generate(
    engine: Seq2SeqGenerator, oracle: dict[str, list[int]]
) -> None:
    for text in TEXTS:
        assert _alone(engine, text) == oracle[text], text


def test_requests_joining_at_different_steps_equal_one_at_a_time(
    engine: Seq2SeqGenerator, oracle: dict[str, list[int]]
) -> None:
    produced: dict[int, list[int]] = {}
    finished: dict[int, str] = {}
    # A new request every third step, so rows of different encoder lengths and decoder columns
    # share the batch; one of them is cancelled part-way and must not disturb the others.
    schedule = {0: 0, 3: 1, 6: 2, 7: 3, 12: 4}
    step = 0
    while schedule or engine.has_work():
        if step in schedule:
            i = schedule.pop(step)
            engine.add(i, engine.encode_prompt(TEXTS[i]), GREEDY)
        if step == 9:
            engine.cancel(1)
        _drain(engine, produced, finished)
        step += 1
    for i, text in enumerate(TEXTS):
        if i == 1:
            assert produced[1] == oracle[text][: len(produced[1])]  # what it made before leaving
            continue
        assert produced[i] == oracle[text], text
        assert finished[i] in ("stop", "length")
    assert engine.memory_bytes() > 0


def test_the_first_token_can_end_a_row(engine: Seq2SeqGenerator, oracle: dict[str, list[int]]) -> None:
    engine.add(1, engine.encode_prompt(TEXTS[0]), GREEDY)
    engine.step()
    engine.add(2, engine.encode_prompt(TEXTS[2]), SamplingParams(max_tokens=1, temperature=0.0))
    produced: dict[int, list[int]] = {}
    finished: dict[int, str] = {}
    while engine.has_work():
        _drain(engine, produced, finished)
    assert finished[2] == "length" and produced[2] == oracle[TEXTS[2]][:1]
    assert engine.memory_bytes() > 0


def test_seeded_sampling_repeats_and_differs_from_greedy(engine: Seq2SeqGenerator) -> None:
    params = SamplingParams(max_tokens=MAX, temperature=1.5, seed=7)
    runs = []
    for _ in range(2):
        engine.add(5, engine.encode_prompt(TEXTS[0]), params)
        produced: dict[int, list[int]] = {}
        while engine.has_work():
            _drain(engine, produced, {})
        runs.append(produced[5])
    assert runs[0] == runs[1]


def test_limits_are_refused_with_their_parameter(engine: Seq2SeqGenerator) -> None:
    too_long = [5] * (engine.context_length + 1)
    with pytest.raises(ContextLengthExceeded) as exc:
        engine.add(1, too_long, GREEDY)
    assert exc.value.param == "prompt"
    with pytest.raises(ContextLengthExceeded) as exc:
        engine.add(2, [5, 6], SamplingParams(max_tokens=engine.decoder_length + 1))
    assert exc.value.param == "max_tokens"
    with pytest.raises(InvalidRequest):
        engine.add(3, [engine.vocab_size], GREEDY)
    assert not engine.has_work()


def test_chat_is_one_encoder_input(family: str, engine: Seq2SeqGenerator) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "Translate hello now"},
    ]
    ids = engine.apply_chat_template(messages)
    if family == "bart":  # the tokenizer has a template: its text, with the tokenizer's specials
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages[:3]) + "user: Translate hello now\n"
        assert ids == engine.encode_prompt(text)
    else:  # no template: the last user message
        assert ids == engine.encode_prompt("Translate hello now")
    with pytest.raises(InvalidRequest) as exc:
        engine.apply_chat_template(messages, tools=[{"type": "function", "function": {"name": "f"}}])
    assert exc.value.param == "tools"
    parts = [{"type": "text", "text": "Translate hello "}, {"type": "text", "text": "now"}]
    assert last_user_text([*messages[:3], {"role": "user", "content": parts}]) == "Translate hello now"
    with pytest.raises(InvalidRequest) as exc:
        last_user_text(messages[:1])
    assert exc.value.param == "messages"


def test_what_the_engine_cannot_honour_is_declared(engine: Seq2SeqGenerator) -> None:
    with pytest.raises(InvalidRequest) as exc:
        capabilities.check(engine, SamplingParams(prompt_logprobs=0))
    assert exc.value.param == "echo"
    capabilities.check(engine, SamplingParams(logprobs=2, presence_penalty=0.5))
    with pytest.raises(InvalidRequest) as exc:
        engine.compile_constraint(type("Spec", (), {"param": "response_format"})())
    assert exc.value.param == "response_format"
