"""OpenVINO GenAI's sampling features as the engine exposes them: the chosen tokens' logprobs
and, with echo, the prompt's, equal transformers' scores (float32); the penalties reach GenAI's
generation config; what GenAI lacks is declared missing, so the daemon refuses it by name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("openvino_genai")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.causal_models import causal_model  # noqa: E402
from support.engine_steps import drive  # noqa: E402

from hfd.backends import capabilities  # noqa: E402
from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.openvino_backend import OpenVINOBackend  # noqa: E402
from hfd.client.errors import InvalidRequest  # noqa: E402

EXPORTS = Path(__file__).resolve().parents[2] / ".cache" / "test-exports"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Hello"]


@pytest.fixture(scope="module", params=[True, False], ids=["process", "in-process"])
def ov(request: pytest.FixtureRequest) -> Iterator[GenerationModel]:
    gen = OpenVINOBackend().load_generator(
        LoadOptions(
            path=causal_model("llama"),
            task="generate",
            cache_dir=EXPORTS,
            weight_format="fp32",
            dtype="float32",
            threads=1,
            extra={"pipeline_process": request.param},
        )
    )
    yield gen
    gen.close()


def test_greedy_and_prompt_logprobs_match_transformers(ov: GenerationModel) -> None:
    hf = transformers.AutoModelForCausalLM.from_pretrained(causal_model("llama"), dtype=torch.float32).eval()
    prompts = [ov.encode_prompt(t) for t in TEXTS]
    echo = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True, logprobs=0, prompt_logprobs=0)
    plain = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    outs = drive(ov, {0: (prompts[0], echo), 1: (prompts[1], echo), 2: (prompts[0], plain)})
    plain_tokens = [t for o in outs[2] for t in o.token_ids]
    assert all(o.logprobs is None and o.prompt_logprobs is None for o in outs[2])
    for i, prompt in enumerate(prompts):
        tokens = [t for o in outs[i] for t in o.token_ids]
        lps = [lp for o in outs[i] for lp in (o.logprobs or [])]
        firsts = [o.prompt_logprobs for o in outs[i] if o.prompt_logprobs is not None]
        assert len(tokens) == 4 and len(lps) == 4 and len(firsts) == 1
        if i == 0:
            assert tokens == plain_tokens  # echo does not leak the prompt into the output
        with torch.inference_mode():
            ref = hf(torch.tensor([prompt + tokens])).logits[0].log_softmax(-1)
        for j, (t, lp) in enumerate(zip(tokens, lps, strict=True)):
            assert lp.token_id == t
            assert lp.logprob == pytest.approx(float(ref[len(prompt) - 1 + j, t]), abs=1e-2)
        got = firsts[0]
        assert len(got) == len(prompt) and got[0] is None
        for j in range(1, len(prompt)):
            assert got[j].logprob == pytest.approx(float(ref[j - 1, prompt[j]]), abs=1e-2)


def test_penalties_reach_genai(ov: GenerationModel) -> None:
    prompt = ov.encode_prompt(TEXTS[1])
    free = SamplingParams(max_tokens=12, temperature=0.7, seed=3, ignore_eos=True)
    penalised = SamplingParams(
        max_tokens=12, temperature=0.7, seed=3, ignore_eos=True, presence_penalty=2.0, frequency_penalty=2.0,
        repetition_penalty=2.0,
    )  # fmt: skip
    jobs = {0: (prompt, free), 1: (prompt, penalised)}
    tokens = {sid: [t for o in out for t in o.token_ids] for sid, out in drive(ov, jobs).items()}
    assert tokens[0] != tokens[1]
    assert len(set(tokens[1])) >= len(set(tokens[0]))


def test_what_genai_lacks_is_refused_by_name(ov: GenerationModel) -> None:
    for params, param in [
        (SamplingParams(logprobs=2), "top_logprobs"),
        (SamplingParams(logit_bias=((5, 1.0),)), "logit_bias"),
        # GenAI applies penalties only when sampling: greedy with one would silently ignore it.
        (SamplingParams(temperature=0.0, presence_penalty=1.0), "presence_penalty"),
    ]:
        with pytest.raises(InvalidRequest) as info:
            capabilities.check(ov, params)
        assert info.value.param == param and "openvino engine" in str(info.value)
    capabilities.check(ov, SamplingParams(logprobs=0, prompt_logprobs=0, presence_penalty=1.0))
