"""Sampling features of the torch engine: logprobs (generated and prompt tokens) equal
transformers' own scores, per-row penalties equal a per-row reference loop, and logit_bias
forces or bans a token, each row of a shared batch with its own settings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.causal_models import causal_model  # noqa: E402
from support.engine_steps import drive  # noqa: E402
from support.models import tiny_llama  # noqa: E402

from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.torch_backend import TorchBackend  # noqa: E402
from hfd.backends.torch_penalties import Penalties, apply  # noqa: E402
from hfd.backends.torch_sampling import RowSampling, sample_with_logprobs  # noqa: E402

TEXTS = ["Hello", "The quick brown fox jumps over the lazy dog.", "Rain on the roof"]


@pytest.fixture(scope="module", params=["llama", "mamba"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[GenerationModel, object]]:
    path = tiny_llama() if request.param == "llama" else causal_model("mamba")
    gen = TorchBackend().load_generator(
        LoadOptions(path=path, task="generate", max_running=8, dtype="float32")
    )
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    yield gen, hf.eval()
    gen.close()


def _hf_logprobs(hf, ids: list[int]):  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return hf(torch.tensor([ids])).logits[0].float().log_softmax(-1)


def test_greedy_logprobs_match_transformers_in_a_batch(setup) -> None:  # type: ignore[no-untyped-def]
    gen, hf = setup
    prompts = [gen.encode_prompt(t) for t in TEXTS]
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True, logprobs=3)
    plain = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    jobs = {i: (p, params) for i, p in enumerate(prompts)}
    jobs[9] = (prompts[1], plain)  # a row that asked for none shares the batch
    outs = drive(gen, jobs)
    assert all(o.logprobs is None for o in outs[9])
    for i, prompt in enumerate(prompts):
        tokens = [t for o in outs[i] for t in o.token_ids]
        lps = [lp for o in outs[i] for lp in (o.logprobs or [])]
        assert len(lps) == len(tokens) == 6
        ref = _hf_logprobs(hf, prompt + tokens)
        for j, (token, lp) in enumerate(zip(tokens, lps, strict=True)):
            row = ref[len(prompt) - 1 + j]
            assert lp.token_id == token
            assert lp.logprob == pytest.approx(float(row[token]), abs=1e-4)
            values, index = row.topk(3)
            assert [t for t, _ in lp.top] == index.tolist()
            assert [v for _, v in lp.top] == pytest.approx(values.tolist(), abs=1e-4)
            assert lp.top[0][0] == token  # greedy: the chosen token is the most likely


def test_prompt_logprobs_match_transformers(setup) -> None:  # type: ignore[no-untyped-def]
    gen, hf = setup
    prompts = [gen.encode_prompt(t) for t in TEXTS]
    echo = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True, logprobs=1, prompt_logprobs=1)
    plain = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True)
    outs = drive(gen, {0: (prompts[0], echo), 1: (prompts[1], echo), 2: (prompts[2], plain)})
    assert outs[2][0].prompt_logprobs is None
    for i in (0, 1):
        got = outs[i][0].prompt_logprobs
        prompt = prompts[i]
        assert got is not None and len(got) == len(prompt) and got[0] is None
        ref = _hf_logprobs(hf, prompt)
        for j in range(1, len(prompt)):
            entry = got[j]
            assert entry is not None and entry.token_id == prompt[j]
            assert entry.logprob == pytest.approx(float(ref[j - 1, prompt[j]]), abs=1e-4)
            assert entry.top[0][0] == int(ref[j - 1].argmax())


def _reference(logits, p: Penalties):  # type: ignore[no-untyped-def]
    """The penalties of one row, a token at a time (the definitions in torch_penalties)."""
    out = logits.clone()
    for t in range(out.shape[0]):
        if p.repetition != 1.0 and (p.counts[t] > 0 or t in p.prompt):
            out[t] = out[t] / p.repetition if out[t] > 0 else out[t] * p.repetition
        c = p.counts[t]
        out[t] -= c * p.frequency + (1.0 if c > 0 else 0.0) * p.presence
    for t, b in p.bias:
        out[t] += b
    return out


def test_vectorised_penalties_equal_a_per_row_reference_loop() -> None:
    torch.manual_seed(0)
    vocab = 50
    logits = torch.randn(4, vocab) * 3
    rows = [
        Penalties(presence=0.5, frequency=0.3, counts=Counter({1: 2, 7: 1, 49: 4})),
        Penalties(repetition=1.3, prompt=frozenset({3, 4, 7}), counts=Counter({7: 1, 9: 2})),
        Penalties(bias=((5, 100.0), (6, -100.0), (5, 1.0))),
        Penalties(presence=-1.0, frequency=-2.0, repetition=0.8, bias=((0, 2.5),), counts=Counter({0: 3})),
    ]
    expected = torch.stack([_reference(logits[i], p) for i, p in enumerate(rows)])
    # Row order in the batch is not row order of the penalties: rows 1 and 3 of a 5-row batch
    # stay untouched.
    batch = torch.cat([logits[:1], torch.zeros(1, vocab), logits[1:3], torch.zeros(1, vocab), logits[3:]])
    apply(batch, [0, 2, 3, 5], rows)
    assert torch.allclose(batch[[0, 2, 3, 5]], expected, atol=1e-5)
    assert not batch[1].any() and not batch[4].any()


def test_penalties_count_the_generated_tokens() -> None:
    p = Penalties(frequency=1.0)
    logits = torch.zeros(2, 8)
    logits[:, 3] = 1.5  # row 0's favourite until it has been generated twice
    rows = [RowSampling(0.0, 1.0, None, False, penalties=p), RowSampling(0.0, 1.0, None, False)]
    picked = [sample_with_logprobs(logits.clone(), rows, None)[0] for _ in range(4)]
    assert [r[0] for r in picked][:2] == [3, 3] and picked[2][0] != 3
    assert all(r[1] == 3 for r in picked)  # the unpenalised row is untouched
    assert p.counts[3] == 2


def test_logit_bias_forces_and_bans_tokens(setup) -> None:  # type: ignore[no-untyped-def]
    gen, _ = setup
    prompt = gen.encode_prompt(TEXTS[1])
    free = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)
    base = [t for o in drive(gen, {0: (prompt, free)})[0] for t in o.token_ids]
    forced = SamplingParams(max_tokens=5, temperature=0.9, seed=1, ignore_eos=True, logit_bias=((42, 100.0),))
    banned = SamplingParams(
        max_tokens=5, temperature=0.0, ignore_eos=True, logit_bias=tuple((t, -100.0) for t in set(base))
    )
    outs = drive(gen, {1: (prompt, forced), 2: (prompt, banned), 3: (prompt, free)})
    tokens = {sid: [t for o in out for t in o.token_ids] for sid, out in outs.items()}
    assert tokens[1] == [42] * 5
    assert not set(tokens[2]) & set(base)
    assert tokens[3] == base


def test_presence_penalty_changes_a_greedy_row_only(setup) -> None:  # type: ignore[no-untyped-def]
    gen, _ = setup
    prompt = gen.encode_prompt(TEXTS[0])
    free = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    strong = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, presence_penalty=2.0)
    outs = drive(gen, {0: (prompt, free), 1: (prompt, strong)})
    tokens = {sid: [t for o in out for t in o.token_ids] for sid, out in outs.items()}
    alone = [t for o in drive(gen, {0: (prompt, free)})[0] for t in o.token_ids]
    assert tokens[0] == alone
    # With a strong presence penalty, repeats are rarer than without (random weights repeat a lot).
    assert len(set(tokens[1])) >= len(set(tokens[0]))
