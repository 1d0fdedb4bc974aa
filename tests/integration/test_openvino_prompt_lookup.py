"""Prompt-lookup decoding on the OpenVINO engine (``options.speculative = "prompt-lookup"``):
greedy output equals the pipeline's without it and transformers' greedy decoding, a step can emit
several tokens (the lookup is really on), in the engine process and in-process; sampling and
logprobs keep working."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("openvino_genai")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.causal_models import causal_model  # noqa: E402
from support.engine_steps import drive  # noqa: E402

from hfd.backends.base import GenerationModel, LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.openvino_backend import OpenVINOBackend  # noqa: E402

EXPORTS = Path(__file__).resolve().parents[2] / ".cache" / "test-exports"
# Repeats itself, and the random model's greedy continuation repeats a bigram of it.
TEXT = "one two three four five six seven one two three four five six seven one two three"
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)


def _load(**extra: Any) -> GenerationModel:
    return OpenVINOBackend().load_generator(
        LoadOptions(
            path=causal_model("llama"), task="generate", cache_dir=EXPORTS, weight_format="fp32",
            dtype="float32", threads=1, extra=extra,
        )
    )  # fmt: skip


@pytest.fixture(scope="module")
def plain() -> Iterator[GenerationModel]:
    gen = _load(pipeline_process=False)
    yield gen
    gen.close()


def _tokens(outs: dict[int, list[Any]], sid: int) -> list[int]:
    return [t for o in outs[sid] for t in o.token_ids]


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "process"])
def test_greedy_output_equals_without_lookup(plain: GenerationModel, process: bool) -> None:
    lookup = _load(pipeline_process=process, speculative="prompt-lookup", lookup_tokens=4, lookup_ngram=2)
    try:
        prompts = [plain.encode_prompt(TEXT), plain.encode_prompt("Hello there")]
        jobs = {i: (p, GREEDY) for i, p in enumerate(prompts)}
        want, got = drive(plain, jobs), drive(lookup, jobs)
        for sid in jobs:
            assert _tokens(got, sid) == _tokens(want, sid) and len(_tokens(got, sid)) == 24
        assert all(len(o.token_ids) == 1 for o in want[0])  # one token per step without lookup
        if not process:  # in-process, each output is one step: a lookup step kept several tokens
            assert max(len(o.token_ids) for o in got[0]) > 1
        hf = transformers.AutoModelForCausalLM.from_pretrained(
            causal_model("llama"), dtype=torch.float32
        ).eval()
        with torch.inference_mode():
            ref = hf.generate(
                torch.tensor([prompts[0]]), max_new_tokens=24, min_new_tokens=24, do_sample=False
            )
        assert _tokens(got, 0) == ref[0, len(prompts[0]) :].tolist()
        sampled = SamplingParams(max_tokens=8, temperature=0.8, seed=1, ignore_eos=True, logprobs=0)
        outs = drive(lookup, {5: (prompts[0], sampled)})
        assert len(_tokens(outs, 5)) == 8 and sum(len(o.logprobs or []) for o in outs[5]) == 8
    finally:
        lookup.close()
