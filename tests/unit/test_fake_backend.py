"""The fake engine: deterministic output, injected failures, and its place in the registry."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hfd.backends import registry
from hfd.backends.base import (
    EncoderModel,
    GenerationModel,
    LoadOptions,
    SamplingParams,
    StepOutput,
    interrupter,
    is_alive,
)
from hfd.backends.fake_backend import EOS, FakeGenerator, Tokenizer
from hfd.backends.hardware import detect
from hfd.backends.policy import choose_engine
from hfd.backends.registry import get_backend
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)


def gen(tmp_path: Path, **extra: object) -> GenerationModel:
    return get_backend("fake").load_generator(LoadOptions(path=tmp_path, task="generate", extra=dict(extra)))


def enc(tmp_path: Path, **extra: object) -> EncoderModel:
    return get_backend("fake").load_encoder(LoadOptions(path=tmp_path, task="embed", extra=dict(extra)))


def run(
    model: GenerationModel, prompts: dict[int, str], params: SamplingParams = GREEDY
) -> dict[int, list[int]]:
    for seq_id, prompt in prompts.items():
        model.add(seq_id, model.encode_prompt(prompt), params)
    out: dict[int, list[int]] = {i: [] for i in prompts}
    while model.has_work():
        for o in model.step():
            out[o.seq_id].extend(o.token_ids)
    return out


def test_it_implements_the_engine_protocols(tmp_path: Path) -> None:
    assert isinstance(gen(tmp_path), GenerationModel)
    assert isinstance(enc(tmp_path), EncoderModel)
    assert get_backend("fake").available() == (True, "")


def test_a_sequence_is_the_same_alone_and_in_a_batch(tmp_path: Path) -> None:
    alone = run(gen(tmp_path), {1: "hello"})[1]
    batched = run(gen(tmp_path), {7: "other", 8: "hello", 9: "a third prompt"})
    assert batched[8] == alone and len(alone) == 8
    assert batched[7] != alone


def test_seeded_sampling_repeats_and_differs_from_greedy(tmp_path: Path) -> None:
    seeded = SamplingParams(max_tokens=8, temperature=0.8, seed=5, ignore_eos=True)
    a = run(gen(tmp_path), {1: "x"}, seeded)[1]
    assert run(gen(tmp_path), {1: "x"}, seeded)[1] == a
    assert run(gen(tmp_path), {1: "x"})[1] != a


def test_finish_reasons_length_and_eos(tmp_path: Path) -> None:
    model = gen(tmp_path, eos_after=3)
    model.add(1, model.encode_prompt("p"), SamplingParams(max_tokens=10, temperature=0.0))
    model.add(2, model.encode_prompt("p"), SamplingParams(max_tokens=2, temperature=0.0))
    outs: list[StepOutput] = []
    while model.has_work():
        outs.extend(model.step())
    ends = {o.seq_id: (o.token_ids, o.finished) for o in outs if o.finished}
    assert ends[1] == ([EOS], "stop")
    assert ends[2][1] == "length"
    assert sum(1 for o in outs if o.seq_id == 1) == 3


def test_text_decodes_to_words_and_prompt_bytes_round_trip(tmp_path: Path) -> None:
    model = gen(tmp_path)
    assert model.decode(model.encode_prompt("héllo wörld")) == "héllo wörld"
    tokens = run(model, {1: "hi"})[1]
    pieces = [model.decode([t]) for t in tokens]
    assert all(p.startswith(" ") and len(p) == 4 for p in pieces)
    assert model.decode(tokens) == "".join(pieces)


def test_bad_prompts_are_refused(tmp_path: Path) -> None:
    model = gen(tmp_path, context_length=8)
    with pytest.raises(InvalidRequest):
        model.add(1, [], GREEDY)
    with pytest.raises(ContextLengthExceeded):
        model.add(1, Tokenizer.encode("123456789"), GREEDY)
    with pytest.raises(InvalidRequest, match="top_p"):
        model.add(1, [5], SamplingParams(top_p=0.0))
    with pytest.raises(InvalidRequest, match="token ids"):
        model.add(1, [-1], GREEDY)
    with pytest.raises(InvalidRequest):
        gen(tmp_path, step_ms="slow")


def test_cancel_frees_the_sequence(tmp_path: Path) -> None:
    model = gen(tmp_path)
    model.add(1, [5], SamplingParams(max_tokens=100))
    model.step()
    model.cancel(1)
    model.cancel(99)  # unknown ids are ignored
    assert not model.has_work()


def test_embeddings_are_unit_vectors_of_the_text(tmp_path: Path) -> None:
    model = enc(tmp_path, dimensions=16, max_length=4)
    batch = model.tokenize(["a b c d", "a b e", "x"])
    assert batch.lengths == [4, 4, 3]  # bos, words, eos; truncated to max_length
    vectors = model.embed(batch)
    assert vectors.shape == (3, 16) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(vectors[0], vectors[1])  # same tokens after truncation
    assert not np.allclose(vectors[0], vectors[2])
    np.testing.assert_array_equal(enc(tmp_path, dimensions=16).embed(model.tokenize(["x"]))[0], vectors[2])


def test_injected_failures(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable, match="no such weights"):
        get_backend("fake").load_generator(
            LoadOptions(path=tmp_path, task="generate", extra={"fail_at_load": "no such weights"})
        )
    enc(tmp_path, fail_at_load="false")  # written as text in a config: off

    model = gen(tmp_path, fail_at_step=2)
    model.add(1, [5], SamplingParams(max_tokens=5))
    model.step()
    with pytest.raises(RuntimeError, match="failed at call 2"):
        model.step()
    assert model.step() and model.alive  # one failure, then it works again

    dying = gen(tmp_path, die_at_step=1)
    dying.add(1, [5], SamplingParams(max_tokens=5))
    with pytest.raises(RuntimeError, match="died"):
        dying.step()
    assert not dying.alive
    with pytest.raises(RuntimeError, match="dead"):
        dying.step()

    encoder = enc(tmp_path, fail_at_batch=1)
    with pytest.raises(RuntimeError):
        encoder.embed(encoder.tokenize(["a"]))
    assert encoder.embed(encoder.tokenize(["a"])).shape == (1, 8)


def test_interrupt_cuts_a_slow_step_short(tmp_path: Path) -> None:
    model = gen(tmp_path, step_ms=600_000)
    assert isinstance(model, FakeGenerator)
    model.add(1, [5], GREEDY)
    got: list[list[StepOutput]] = []
    worker = threading.Thread(target=lambda: got.append(model.step()))
    worker.start()
    model.interrupt()
    worker.join(60)
    assert not worker.is_alive() and got == [[]]


def test_the_policy_offers_it_only_when_pinned_or_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    report = detect()
    assert registry.record("fake").tasks == {"generate", "embed"}
    monkeypatch.delenv(registry.FAKE_ENGINE_ENV, raising=False)
    for task in ("generate", "embed"):
        try:
            unpinned = choose_engine(task, report)
        except ModelUnavailable:  # no real engine installed: still never the fake one
            unpinned = []
        assert all(c.engine != "fake" for c in unpinned)
        assert [c.engine for c in choose_engine(task, report, pinned_engine="fake")] == ["fake"]
    monkeypatch.setenv(registry.FAKE_ENGINE_ENV, "1")
    assert [(c.engine, c.device) for c in choose_engine("embed", report)] == [("fake", "cpu")]


def test_importing_it_imports_no_engine_library() -> None:
    code = (
        "import sys, hfd.backends.fake_backend, hfd.backends.registry as r; r.get_backend('fake'); "
        "print(sorted(m for m in ('torch', 'transformers', 'openvino', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_optional_members_are_read_through_base_with_their_defaults(tmp_path: Path) -> None:
    model = gen(tmp_path, die_at_step=1)
    assert interrupter(model) == model.interrupt  # type: ignore[attr-defined]
    assert is_alive(model)
    model.add(1, [5], GREEDY)
    with pytest.raises(RuntimeError):
        model.step()
    assert not is_alive(model)

    class Plain:  # an engine model without either member
        pass

    assert interrupter(Plain()) is None and is_alive(Plain())
