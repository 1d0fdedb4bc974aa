"""Speculative decoding with a draft model on the OpenVINO engine (``options = { draft_model =
"org/name" }``): the draft, given as the directory the model manager resolved, is exported like
any model and handed to GenAI's pipeline as its ``draft_model``; greedy output is the same as
without it, in the engine process and in-process, with a draft that agrees with the model and
with one that often does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.draft_models import tiny_llama_draft
from support.engine_steps import drive
from support.models import tiny_llama

from hfd.backends.base import LoadOptions, SamplingParams
from hfd.client.errors import InvalidRequest

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
pytest.importorskip("torch", reason="the draft is built and exported with transformers (hfd[torch])")

from hfd.backends.openvino_backend import OpenVINOBackend

PROMPTS = ["hello world the quick", "Paris is the capital of", "Write a short poem about the ocean."]
N = 24


def _load(tmp: Path, **extra: Any) -> Any:
    opts = LoadOptions(path=tiny_llama(), task="generate", cache_dir=tmp, dtype="float32", threads=1,
                       max_running=8, extra=extra)  # fmt: skip
    return OpenVINOBackend().load_generator(opts)


def _greedy(gen: Any) -> tuple[list[list[int]], int]:
    """Each prompt's greedy tokens, and the most steps a prompt took."""
    params = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)
    prompts = {i: (gen.encode_prompt(p), params) for i, p in enumerate(PROMPTS)}
    outs = drive(gen, prompts)
    return [[t for out in outs[i] for t in out.token_ids] for i in range(len(PROMPTS))], max(
        map(len, outs.values())
    )


@pytest.mark.slow
@pytest.mark.parametrize("in_process", [False, True])
def test_greedy_output_with_a_draft_equals_without(tmp_path: Path, in_process: bool) -> None:
    plain = _load(tmp_path)
    try:
        expected, steps = _greedy(plain)
    finally:
        plain.close()
    for draft in (tiny_llama(), tiny_llama_draft()):  # one that always agrees, one that often does not
        extra: dict[str, Any] = {"draft_model": "acme/draft", "draft_model_path": str(draft)}
        if in_process:
            extra["pipeline_process"] = False
        gen = _load(tmp_path, **extra)
        try:
            assert gen.speculative is not None
            got, draft_steps = _greedy(gen)
            assert got == expected
            if in_process and draft == tiny_llama():  # a draft that always agrees: 5 + 1 a step
                assert draft_steps < steps / 2, (draft_steps, steps)
        finally:
            gen.close()


def test_a_draft_with_prompt_lookup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as err:
        _load(
            tmp_path,
            draft_model="acme/draft",
            draft_model_path=str(tiny_llama()),
            speculative="prompt-lookup",
        )
    assert err.value.param == "options.draft_model"


@pytest.mark.slow
def test_the_memory_reported_counts_the_drafts_weights(tmp_path: Path) -> None:
    """In-process (no engine process's RSS to stand for it): the model with a draft reports the
    draft's IR more than the model alone, before any step allocates the KV cache."""
    from hfd.backends.openvino_export import ir_bytes

    plain = _load(tmp_path, pipeline_process=False)
    try:
        alone = plain.memory_bytes()
    finally:
        plain.close()
    gen = _load(
        tmp_path, pipeline_process=False, draft_model="acme/draft", draft_model_path=str(tiny_llama_draft())
    )
    try:
        assert gen._draft_dir is not None and ir_bytes(gen._draft_dir) > 0
        assert gen.memory_bytes() == alone + ir_bytes(gen._draft_dir)
    finally:
        gen.close()
