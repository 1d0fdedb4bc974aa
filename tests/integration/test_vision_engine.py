"""The vision chat engine (``backends/vlm_torch``) against transformers' own greedy
``generate`` on the same image and text, token for token, for LLaVA, Qwen2-VL, Idefics3,
SmolVLM and Gemma 3 on one and two images; its prompt ids equal the processor's; a stop event
ends generation after the current token; ignore_eos gives exactly max_tokens."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from support import media_models, vlm_models

from hfd.backends.base import LoadOptions, SamplingParams

pytest.importorskip("torch", reason="vision chat runs on the torch engine")

PROMPT = "what is in this picture?"
IMAGES = [media_models.png(width=48, height=40, seed=3), media_models.png(width=70, height=30, seed=4)]


@pytest.fixture(scope="module", params=list(vlm_models.tiny_models()))
def case(request: pytest.FixtureRequest) -> tuple[Path, Any]:
    from hfd.backends import vlm_torch

    path = vlm_models.tiny_models()[request.param]()
    return path, vlm_torch.load(LoadOptions(path=path, task="vision-chat", device="cpu"))


def _prompt(engine: Any, count: int) -> Any:
    from PIL import Image

    images = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in IMAGES[:count]]
    content = [*({"type": "image"} for _ in images), {"type": "text", "text": PROMPT}]
    return engine.prepare([{"role": "user", "content": content}], images)


def test_prompt_tensors_equal_transformers_inputs(case: tuple[Path, Any]) -> None:
    import torch

    path, engine = case
    want = vlm_models.oracle_inputs(path, IMAGES, PROMPT)
    prompt = _prompt(engine, 2)
    assert prompt.ids == want["input_ids"][0].tolist()
    assert sorted(prompt.tensors) == sorted(want)
    for key, value in want.items():
        assert torch.equal(torch.as_tensor(prompt.tensors[key]), torch.as_tensor(value)), key


@pytest.mark.parametrize("count", [1, 2])
def test_greedy_tokens_equal_generate(case: tuple[Path, Any], count: int) -> None:
    path, engine = case
    want = vlm_models.oracle_generate(path, IMAGES[:count], PROMPT, 16)
    got: list[int] = []
    finish = engine.generate(_prompt(engine, count), SamplingParams(max_tokens=16, temperature=0), got.extend,
                             threading.Event())  # fmt: skip
    assert got == want
    assert finish == ("length" if len(got) == 16 else "stop")


def test_stop_event_ends_after_the_current_token(case: tuple[Path, Any]) -> None:
    _, engine = case
    stop = threading.Event()
    got: list[int] = []

    def emit(ids: list[int]) -> None:
        got.extend(ids)
        if len(got) == 3:
            stop.set()

    finish = engine.generate(_prompt(engine, 1), SamplingParams(max_tokens=50, temperature=0, ignore_eos=True), emit,
                             stop)  # fmt: skip
    assert finish == "cancelled" and len(got) == 3


def test_ignore_eos_gives_max_tokens(case: tuple[Path, Any]) -> None:
    _, engine = case
    got: list[int] = []
    params = SamplingParams(max_tokens=20, temperature=0.9, seed=7, ignore_eos=True)
    assert engine.generate(_prompt(engine, 1), params, got.extend, threading.Event()) == "length"
    assert len(got) == 20
