"""The torch engine on real (tiny, locally built) models: continuous batching must compute for
each sequence exactly what it would alone, and embeddings must match sentence-transformers."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.models import minilm, tiny_bert, tiny_llama  # noqa: E402

from hfd.backends.base import EncoderModel, GenerationModel, LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.registry import get_backend  # noqa: E402
from hfd.backends.torch_backend import TorchBackend, TorchGenerator  # noqa: E402
from hfd.client.errors import ContextLengthExceeded, InvalidRequest  # noqa: E402

GREEDY = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)

# Prompts of different lengths (token counts 2..60ish), so batches are ragged.
TEXTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France. How many legs does a spider have?",
    "Rain",
    "Cats sleep for most of the day, while dogs prefer to play in the garden. Rivers flow to the sea "
    "and mountains rise above the clouds. She opened the window and listened to the rain on the roof.",
]


@pytest.fixture(scope="module")
def llama_path() -> Path:
    return tiny_llama()


@pytest.fixture(scope="module")
def gen(llama_path: Path) -> Iterator[TorchGenerator]:
    g = TorchBackend().load_generator(LoadOptions(path=llama_path, task="generate", max_running=8))
    yield g
    g.close()


@pytest.fixture(scope="module")
def hf_model(llama_path: Path):  # type: ignore[no-untyped-def]
    return transformers.AutoModelForCausalLM.from_pretrained(llama_path, local_files_only=True).eval()


@pytest.fixture(scope="module")
def prompts(gen: TorchGenerator) -> list[list[int]]:
    return [gen.encode_prompt(t) for t in TEXTS]


def drive(
    model: GenerationModel, schedule: Sequence[tuple[int, int, list[int], SamplingParams]], *, cancel_at=None
) -> tuple[dict[int, list[int]], dict[int, str]]:
    """Run ``(seq_id, join_step, prompt, params)`` joins to completion; tokens and finish reasons.
    ``cancel_at`` maps a step to seq ids cancelled before that step."""
    tokens: dict[int, list[int]] = {}
    reasons: dict[int, str] = {}
    step = 0
    last_join = max(s[1] for s in schedule)
    while step <= last_join or model.has_work():
        for sid, at, prompt, params in schedule:
            if at == step:
                model.add(sid, prompt, params)
        for sid in (cancel_at or {}).get(step, ()):
            model.cancel(sid)
        for out in model.step():
            assert out.seq_id not in reasons, "output after the sequence finished"
            tokens.setdefault(out.seq_id, []).extend(out.token_ids)
            if out.finished:
                reasons[out.seq_id] = out.finished
        step += 1
        assert step < 1000
    assert not model.has_work()
    return tokens, reasons


def alone(model: GenerationModel, prompt: list[int], params: SamplingParams) -> list[int]:
    tokens, _ = drive(model, [(0, 0, prompt, params)])
    return tokens[0]


def hf_greedy(hf_model, prompt: list[int], n: int) -> list[int]:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        out = hf_model.generate(
            torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0
        )
    return [int(t) for t in out[0, len(prompt) :]]


# -- the engine and its registration --------------------------------------------------------------


def test_backend_is_registered_and_available() -> None:
    backend = get_backend("torch")
    assert isinstance(backend, TorchBackend)
    assert backend.available() == (True, "")
    assert backend.devices()[0] == "cpu"
    assert backend.tasks == frozenset({"generate", "embed"})


def test_generator_satisfies_the_protocol(gen: TorchGenerator, llama_path: Path) -> None:
    assert isinstance(gen, GenerationModel)
    assert gen.context_length == 256
    assert gen.eos_token_ids == frozenset({2})
    params = sum(p.numel() * 4 for p in gen.model.parameters())
    assert gen.memory_bytes() >= params
    # On the CPU, grouped-query attention runs without copying K/V per group.
    assert gen.model.config._attn_implementation == "hfd_gqa_sdpa"


def test_gqa_attention_matches_transformers_sdpa() -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from hfd.backends.torch_attention import gqa_sdpa_forward

    module = torch.nn.Module()
    module.num_key_value_groups = 2  # type: ignore[assignment]
    module.is_causal = True  # type: ignore[assignment]
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 5, 16, generator=gen)
    k, v = torch.randn(3, 2, 9, 16, generator=gen), torch.randn(3, 2, 9, 16, generator=gen)
    mask = torch.rand(3, 1, 5, 9, generator=gen) > 0.3
    mask[..., -1] = True
    for m in (mask, None):
        want, _ = sdpa_attention_forward(module, q, k, v, m, scaling=0.25)
        got, _ = gqa_sdpa_forward(module, q, k, v, m, scaling=0.25)
        torch.testing.assert_close(got, want)


# -- greedy parity --------------------------------------------------------------------------------


def test_greedy_alone_matches_hf_generate(gen: TorchGenerator, hf_model, prompts: list[list[int]]) -> None:  # type: ignore[no-untyped-def]
    for prompt in prompts:
        assert alone(gen, prompt, GREEDY) == hf_greedy(hf_model, prompt, 16)


def test_greedy_is_the_same_in_a_batch_with_staggered_joins(
    gen: TorchGenerator, prompts: list[list[int]]
) -> None:
    expected = [alone(gen, p, GREEDY) for p in prompts]
    # Short prompts first, then longer ones join while they run (the running batch must shift
    # right), and sequences of different lengths finish at different steps (rows are removed).
    schedule = [
        (0, 0, prompts[0], GREEDY),
        (1, 1, prompts[3], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)),
        (2, 2, prompts[4], GREEDY),
        (3, 2, prompts[1], GREEDY),
        (4, 6, prompts[2], GREEDY),
        (5, 9, prompts[0], SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)),
    ]
    tokens, reasons = drive(gen, schedule)
    assert tokens[0] == expected[0]
    assert tokens[1] == expected[3][:5]
    assert tokens[2] == expected[4]
    assert tokens[3] == expected[1]
    assert tokens[4] == expected[2]
    assert tokens[5] == expected[0][:3]
    assert set(reasons.values()) == {"length"}


def test_rows_stay_right_after_the_padding_is_trimmed(gen: TorchGenerator, prompts: list[list[int]]) -> None:
    # A long prompt runs while a short one joins (the short row gets a wide band of padding on
    # its left); when the long one leaves, that band is trimmed from the cache.
    long_prompt = prompts[4] + prompts[2]
    assert len(long_prompt) > 64
    short = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    brief = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    expected_short = alone(gen, prompts[0], short)
    expected_long = alone(gen, long_prompt, brief)
    gen.add(0, long_prompt, brief)
    gen.step()
    gen.add(1, prompts[0], short)
    tokens: dict[int, list[int]] = {}
    lengths = []
    while gen.has_work():
        for out in gen.step():
            tokens.setdefault(out.seq_id, []).extend(out.token_ids)
        lengths.append(gen._batcher._cache.length)
    assert tokens[0] == expected_long[1:]  # the first step gave the prefill's token
    assert tokens[1] == expected_short
    assert min(lengths[2:]) < len(long_prompt)  # the padding band was dropped
    assert gen._batcher._cache.length == 0  # everything released


def test_a_newcomer_is_prefilled_alone_and_running_rows_are_not_starved(
    gen: TorchGenerator, prompts: list[list[int]]
) -> None:
    # A step that admits newcomers returns after their prefill (their first token comes without
    # waiting for a decode of the running batch); the next step decodes every row, even while
    # more requests keep arriving.
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    gen.add(0, prompts[0], params)
    assert [o.seq_id for o in gen.step()] == [0]
    gen.step()  # row 0 decodes
    produced: dict[int, int] = {}
    for i in range(1, 5):
        gen.add(i, prompts[i % len(prompts)], params)
        first = gen.step()
        assert [o.seq_id for o in first] == [i], "a prefill step emits only the newcomer's token"
        second = gen.step()
        assert sorted(o.seq_id for o in second) == list(range(i + 1)), "the next step decodes all rows"
        for out in first + second:
            produced[out.seq_id] = produced.get(out.seq_id, 0) + len(out.token_ids)
    while gen.has_work():
        gen.step()
    assert produced == {0: 4, 1: 5, 2: 4, 3: 3, 4: 2}


def test_prefill_is_split_by_the_token_budget(llama_path: Path, prompts: list[list[int]]) -> None:
    small = TorchBackend().load_generator(
        LoadOptions(path=llama_path, task="generate", max_running=2, max_batched_tokens=16)
    )
    try:
        expected = [alone(small, p, GREEDY) for p in prompts]
        tokens, _ = drive(small, [(i, 0, p, GREEDY) for i, p in enumerate(prompts)])
        assert [tokens[i] for i in range(len(prompts))] == expected
    finally:
        small.close()


# -- sampling -------------------------------------------------------------------------------------


def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(
    gen: TorchGenerator, prompts: list[list[int]]
) -> None:
    seeded = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=7, ignore_eos=True)
    first = alone(gen, prompts[1], seeded)
    assert alone(gen, prompts[1], seeded) == first
    others = [
        (1, 0, prompts[0], SamplingParams(max_tokens=16, temperature=1.5, seed=1, ignore_eos=True)),
        (2, 1, prompts[2], GREEDY),
        (3, 2, prompts[3], SamplingParams(max_tokens=9, temperature=0.5, top_p=0.5, ignore_eos=True)),
    ]
    tokens, _ = drive(gen, [*others, (0, 1, prompts[1], seeded)])
    assert tokens[0] == first
    # Another seed gives another sample (16 tokens from a near-flat distribution).
    assert (
        alone(gen, prompts[1], SamplingParams(max_tokens=16, temperature=0.9, seed=8, ignore_eos=True))
        != first
    )


def test_temperature_sampling_differs_from_greedy(gen: TorchGenerator, prompts: list[list[int]]) -> None:
    hot = SamplingParams(max_tokens=16, temperature=2.0, seed=3, ignore_eos=True)
    assert alone(gen, prompts[1], hot) != alone(gen, prompts[1], GREEDY)


def test_tiny_top_p_is_greedy(gen: TorchGenerator, prompts: list[list[int]]) -> None:
    # With top_p near 0 only the most likely token survives the nucleus.
    nucleus = SamplingParams(max_tokens=16, temperature=1.0, top_p=1e-6, seed=5, ignore_eos=True)
    assert alone(gen, prompts[2], nucleus) == alone(gen, prompts[2], GREEDY)


def test_nucleus_sampling_keeps_the_smallest_prefix_reaching_top_p() -> None:
    from hfd.backends.torch_sampling import RowSampling, make_generator, sample

    # Probabilities 0.5, 0.3, 0.15, 0.05 (+ a tail of near-zero tokens): with top_p 0.75 the
    # nucleus is the first two tokens, renormalised to 0.625 / 0.375.
    probs = torch.full((2000,), 1e-12)
    probs[:4] = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(64, -1).contiguous()
    counts = torch.zeros(4)
    for seed in range(0, 4096, 64):
        rows = [RowSampling(1.0, 0.75, make_generator(seed + i), False) for i in range(64)]
        for token in sample(logits.clone(), rows, None):
            assert token in (0, 1)
            counts[token] += 1
    share = float(counts[0] / counts.sum())
    assert 0.58 < share < 0.67


def _reference_nucleus(logits: Any, top_p: float, seeds: list[int]) -> list[int]:
    """Top-p by the book: sort, keep the prefix reaching top_p, draw in vocabulary order."""
    from hfd.backends.torch_sampling import make_generator

    out = []
    for row, seed in zip(logits, seeds, strict=True):
        probs = torch.softmax(row, dim=-1)
        values, order = probs.sort(descending=True)
        keep = order[(values.cumsum(0) - values) < top_p]
        weights = torch.zeros_like(probs)
        weights[keep] = probs[keep]
        cdf = weights.cumsum(0)
        draw = torch.rand((), generator=make_generator(seed)) * cdf[-1]
        out.append(int(torch.searchsorted(cdf, draw.unsqueeze(0), right=True)[0]))
    return out


def test_nucleus_sampling_matches_the_sorted_definition() -> None:
    from hfd.backends import torch_sampling
    from hfd.backends.torch_sampling import RowSampling, make_generator, sample

    gen = torch.Generator().manual_seed(0)
    peaked = torch.randn(8, 5000, generator=gen) * 8  # the nucleus fits in the top-k
    flat = torch.randn(8, 5000, generator=gen) * 0.5  # it does not: the histogram path
    mixed = torch.cat([peaked[:4], flat[:4]])  # both paths in one batch
    seeds = list(range(8))
    for logits in (peaked, flat, mixed):
        want = _reference_nucleus(logits, 0.9, seeds)
        rows = [RowSampling(1.0, 0.9, make_generator(s), False) for s in seeds]
        assert sample(logits.clone(), rows, None) == want
        saved = torch_sampling._NUCLEUS_TOPK
        torch_sampling._NUCLEUS_TOPK = 0  # the histogram path only
        try:
            rows = [RowSampling(1.0, 0.9, make_generator(s), False) for s in seeds]
            assert sample(logits.clone(), rows, None) == want
        finally:
            torch_sampling._NUCLEUS_TOPK = saved


def test_min_tokens_masks_every_eos_id() -> None:
    from hfd.backends.torch_sampling import RowSampling, sample

    logits = torch.zeros(2, 10)
    logits[:, 3] = 5.0
    logits[:, 4] = 4.0
    rows = [RowSampling(0.0, 1.0, None, True), RowSampling(0.0, 1.0, None, False)]
    assert sample(logits, rows, torch.tensor([3, 4])) == [torch.argmax(logits[0, :3]).item(), 3]


# -- cancellation and finishing ---------------------------------------------------------------------


def test_cancel_removes_a_row_and_the_others_continue(gen: TorchGenerator, prompts: list[list[int]]) -> None:
    expected = {i: alone(gen, prompts[i], GREEDY) for i in (0, 1, 2)}
    schedule = [(i, 0, prompts[i], GREEDY) for i in (0, 1, 2)] + [(3, 0, prompts[3], GREEDY)]
    # Seq 1 (a middle row) is cancelled while running; seq 3 is cancelled while still queued
    # behind nothing (same step it was added); unknown ids are ignored.
    tokens, reasons = drive(gen, schedule, cancel_at={0: [3], 4: [1, 999]})
    assert tokens[0] == expected[0] and tokens[2] == expected[2]
    assert tokens[1] == expected[1][: len(tokens[1])] and 0 < len(tokens[1]) < 16
    assert 1 not in reasons and 3 not in tokens


def test_cancelling_everything_frees_the_cache(gen: TorchGenerator, prompts: list[list[int]]) -> None:
    for i, p in enumerate(prompts):
        gen.add(i, p, GREEDY)
    gen.step()
    for i in range(len(prompts)):
        gen.cancel(i)
    assert not gen.has_work()
    assert gen.step() == []
    gen.add(0, prompts[0], GREEDY)  # the id is free again
    gen.cancel(0)


def test_max_tokens_finishes_with_length(gen: TorchGenerator, prompts: list[list[int]]) -> None:
    for n in (1, 2, 7):
        params = SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True)
        tokens, reasons = drive(gen, [(0, 0, prompts[1], params)])
        assert len(tokens[0]) == n and reasons[0] == "length"


@pytest.fixture
def eos_model(
    llama_path: Path, gen: TorchGenerator, prompts: list[list[int]], tmp_path: Path
) -> Iterator[tuple[TorchGenerator, int, list[int]]]:
    """The tiny model with its eos moved to the token greedy decoding produces 4th for prompt 1,
    so that eos handling can be observed with random weights."""
    greedy = alone(gen, prompts[1], GREEDY)
    eos = greedy[3]
    assert eos not in greedy[:3]
    copy = tmp_path / "eos-model"
    shutil.copytree(llama_path, copy)
    for name in ("config.json", "generation_config.json"):
        data = json.loads((copy / name).read_text())
        data["eos_token_id"] = eos
        (copy / name).write_text(json.dumps(data))
    model = TorchBackend().load_generator(LoadOptions(path=copy, task="generate"))
    # The tokenizer keeps its own eos too; both end a sequence.
    assert eos in model.eos_token_ids
    yield model, eos, greedy
    model.close()


def test_eos_finishes_with_stop(eos_model, prompts: list[list[int]]) -> None:  # type: ignore[no-untyped-def]
    model, eos, greedy = eos_model
    tokens, reasons = drive(model, [(0, 0, prompts[1], SamplingParams(max_tokens=16, temperature=0.0))])
    assert tokens[0] == greedy[:4] and tokens[0][-1] == eos
    assert reasons[0] == "stop"


def test_ignore_eos_keeps_going(eos_model, prompts: list[list[int]]) -> None:  # type: ignore[no-untyped-def]
    model, _, greedy = eos_model
    tokens, reasons = drive(model, [(0, 0, prompts[1], GREEDY)])
    assert tokens[0] == greedy and reasons[0] == "length"


def test_min_tokens_masks_eos_until_reached(eos_model, prompts: list[list[int]]) -> None:  # type: ignore[no-untyped-def]
    model, eos, greedy = eos_model
    params = SamplingParams(max_tokens=16, temperature=0.0, min_tokens=6)
    tokens, reasons = drive(model, [(0, 0, prompts[1], params)])
    assert tokens[0][:3] == greedy[:3]
    assert eos not in tokens[0][:6] and len(tokens[0]) > 6
    assert (reasons[0] == "stop") == (tokens[0][-1] == eos)


def test_context_length_ends_a_sequence(gen: TorchGenerator) -> None:
    prompt = [5] * 250
    tokens, reasons = drive(
        gen, [(0, 0, prompt, SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True))]
    )
    assert len(tokens[0]) == 6 and reasons[0] == "length"


def test_bad_requests_are_refused(gen: TorchGenerator) -> None:
    with pytest.raises(ContextLengthExceeded):
        gen.add(0, [5] * 256, GREEDY)
    with pytest.raises(InvalidRequest):
        gen.add(0, [], GREEDY)
    with pytest.raises(InvalidRequest):
        gen.add(0, [10**6], GREEDY)
    with pytest.raises(InvalidRequest):
        gen.add(0, [5], SamplingParams(max_tokens=0))
    gen.add(0, [5], GREEDY)
    with pytest.raises(InvalidRequest):
        gen.add(0, [5], GREEDY)
    gen.cancel(0)
    assert not gen.has_work()


# -- tokenizer-facing calls -----------------------------------------------------------------------


def test_prompt_encoding_and_decoding_match_the_tokenizer(gen: TorchGenerator, llama_path: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(llama_path)
    text = "The quick brown fox jumps over the lazy dog."
    ids = gen.encode_prompt(text)
    assert ids == tok(text)["input_ids"] and ids[0] == tok.bos_token_id
    assert gen.decode(ids) == text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    chat = gen.apply_chat_template(messages)
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat == tok(rendered, add_special_tokens=False)["input_ids"]
    assert rendered.endswith("<|assistant|>\n")


def test_a_model_without_chat_template_says_so(llama_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "no-template"
    shutil.copytree(llama_path, copy)
    (copy / "chat_template.jinja").unlink()
    model = TorchBackend().load_generator(LoadOptions(path=copy, task="generate"))
    try:
        with pytest.raises(InvalidRequest, match="chat template"):
            model.apply_chat_template([{"role": "user", "content": "hi"}])
    finally:
        model.close()


# -- loading safety -------------------------------------------------------------------------------


def test_pickled_weights_are_refused_unless_allowed(llama_path: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    copy = tmp_path / "pickled"
    shutil.copytree(llama_path, copy)
    weights = load_file(copy / "model.safetensors")
    (copy / "model.safetensors").unlink()
    torch.save(weights, copy / "pytorch_model.bin")
    with pytest.raises(InvalidRequest, match="pickle") as err:
        TorchBackend().load_generator(LoadOptions(path=copy, task="generate"))
    assert err.value.param == "allow_pickle"
    allowed = TorchBackend().load_generator(
        LoadOptions(path=copy, task="generate", extra={"allow_pickle": True})
    )
    try:
        assert allowed.context_length == 256
    finally:
        allowed.close()


def test_a_directory_that_is_not_a_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"config\.json"):
        TorchBackend().load_generator(LoadOptions(path=tmp_path, task="generate"))
    with pytest.raises(InvalidRequest, match="not a directory"):
        TorchBackend().load_encoder(LoadOptions(path=tmp_path / "missing", task="embed"))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(InvalidRequest, match="no weight files"):
        TorchBackend().load_generator(LoadOptions(path=tmp_path, task="generate"))


def test_unknown_device_and_dtype_are_refused(llama_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        TorchBackend().load_generator(LoadOptions(path=llama_path, task="generate", dtype="float8"))
    with pytest.raises(InvalidRequest):
        TorchBackend().load_generator(LoadOptions(path=llama_path, task="generate", device="tpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_greedy_is_the_same_in_a_batch(llama_path: Path, prompts: list[list[int]]) -> None:
    model = TorchBackend().load_generator(
        LoadOptions(path=llama_path, task="generate", device="cuda:0", dtype="float32")
    )
    try:
        expected = [alone(model, p, GREEDY) for p in prompts]
        tokens, _ = drive(model, [(i, i, p, GREEDY) for i, p in enumerate(prompts)])
        assert [tokens[i] for i in range(len(prompts))] == expected
    finally:
        model.close()


# -- embeddings -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_encoder() -> Iterator[EncoderModel]:
    enc = TorchBackend().load_encoder(LoadOptions(path=minilm(), task="embed"))
    yield enc
    enc.close()


def test_tiny_bert_embeddings_are_normalised(tmp_path: Path) -> None:
    enc = TorchBackend().load_encoder(LoadOptions(path=tiny_bert(), task="embed"))
    try:
        assert isinstance(enc, EncoderModel)
        assert enc.dimensions == 32 and enc.max_length == 128
        vectors = enc.embed(enc.tokenize(["a cat", "the weather today is sunny", "x"]))
        assert vectors.shape == (3, 32) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
        # Padding does not change a row: alone it embeds the same.
        single = enc.embed(enc.tokenize(["x"]))
        np.testing.assert_allclose(single[0], vectors[2], atol=1e-5)
        assert enc.memory_bytes() > 0
    finally:
        enc.close()


def test_pooling_follows_the_sentence_transformers_config(tmp_path: Path) -> None:
    copy = tmp_path / "cls-bert"
    shutil.copytree(tiny_bert(), copy)
    pooling = json.loads((copy / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True, pooling_mode_max_tokens=True)
    (copy / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    modules = json.loads((copy / "modules.json").read_text())
    (copy / "modules.json").write_text(json.dumps(modules[:2]))  # no Normalize
    enc = TorchBackend().load_encoder(LoadOptions(path=copy, task="embed"))
    model = transformers.AutoModel.from_pretrained(copy).eval()
    try:
        assert enc.dimensions == 64
        batch = enc.tokenize(["a cat sleeps", "rain"])
        got = enc.embed(batch)
        for i, ids in enumerate(batch.ids):
            with torch.inference_mode():
                hidden = model(torch.tensor([ids])).last_hidden_state[0]
            want = torch.cat([hidden[0], hidden.max(dim=0).values]).numpy()
            np.testing.assert_allclose(got[i], want, atol=1e-5)
    finally:
        enc.close()


def test_an_unsupported_sentence_transformers_module_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "dense-bert"
    shutil.copytree(tiny_bert(), copy)
    modules = json.loads((copy / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (copy / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InvalidRequest, match="Dense"):
        TorchBackend().load_encoder(LoadOptions(path=copy, task="embed"))


def test_minilm_embeddings_carry_meaning(minilm_encoder: EncoderModel) -> None:
    vectors = minilm_encoder.embed(
        minilm_encoder.tokenize(
            [
                "A man is playing a guitar.",
                "Someone plays an acoustic guitar.",
                "The stock market fell sharply today.",
            ]
        )
    )
    assert vectors.shape == (3, 384)
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase > 0.5 > unrelated


def test_minilm_matches_manual_mean_pooling(minilm_encoder: EncoderModel) -> None:
    texts = ["Embeddings map sentences to vectors.", "Short one"]
    tok = transformers.AutoTokenizer.from_pretrained(minilm())
    model = transformers.AutoModel.from_pretrained(minilm()).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    want = torch.nn.functional.normalize(mean, dim=-1).numpy()
    got = minilm_encoder.embed(minilm_encoder.tokenize(texts))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_long_inputs_are_truncated(minilm_encoder: EncoderModel) -> None:
    assert minilm_encoder.max_length == 256
    batch = minilm_encoder.tokenize(["word " * 1000, "short"])
    assert batch.lengths[0] == 256 and batch.lengths[1] == 3
    assert minilm_encoder.embed(batch).shape == (2, 384)
    with pytest.raises(InvalidRequest):
        minilm_encoder.tokenize([123])  # type: ignore[list-item]
