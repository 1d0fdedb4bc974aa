"""Vision chat batching (``backends/vlm_batch``): prompts with different images, image counts,
a chat without images, different ``max_tokens``, ``min_tokens`` and ``ignore_eos``, served by
one ``generate_batch`` call, give each row exactly the greedy tokens and finish reason it gets
alone, for every family; one row's stop event ends that row only."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import pytest
from support import media_models, vlm_models

from hfd.backends.base import LoadOptions, SamplingParams

pytest.importorskip("torch", reason="vision chat runs on the torch engine")

IMAGES = [media_models.png(width=48, height=40, seed=3), media_models.png(width=70, height=30, seed=4),
          media_models.png(width=30, height=52, seed=5)]  # fmt: skip
# (image indexes, text, sampling) per row.
ROWS = [
    ([0], "what is in this picture?", SamplingParams(max_tokens=12, temperature=0)),
    ([1, 2], "compare them", SamplingParams(max_tokens=16, temperature=0)),
    ([], "hello there, how are you today?", SamplingParams(max_tokens=8, temperature=0)),
    ([2], "and this one", SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)),
    ([0], "once more", SamplingParams(max_tokens=9, temperature=0, min_tokens=5)),
]


@pytest.fixture(scope="module", params=list(vlm_models.tiny_models()))
def engine(request: pytest.FixtureRequest) -> Any:
    from hfd.backends import vlm_torch

    path: Path = vlm_models.tiny_models()[request.param]()
    return vlm_torch.load(LoadOptions(path=path, task="vision-chat", device="cpu"))


def _prompt(engine: Any, indexes: list[int], text: str) -> Any:
    from PIL import Image

    images = [Image.open(io.BytesIO(IMAGES[i])).convert("RGB") for i in indexes]
    content = [*({"type": "image"} for _ in images), {"type": "text", "text": text}]
    return engine.prepare([{"role": "user", "content": content}], images)


def test_batched_rows_equal_each_alone(engine: Any) -> None:
    from hfd.backends.vlm_batch import VisionRow

    prompts = [_prompt(engine, indexes, text) for indexes, text, _ in ROWS]
    alone: list[tuple[list[int], str]] = []
    for prompt, (_, _, params) in zip(prompts, ROWS, strict=True):
        got: list[int] = []
        alone.append((got, engine.generate(prompt, params, got.extend, threading.Event())))
    outs: list[list[int]] = [[] for _ in ROWS]
    rows = [VisionRow(prompt, params, out.extend, threading.Event())
            for prompt, (_, _, params), out in zip(prompts, ROWS, outs, strict=True)]  # fmt: skip
    finishes = engine.generate_batch(rows)
    assert list(zip(outs, finishes, strict=True)) == alone
    assert len(outs[3]) == 10 and len(outs[4]) >= 5  # ignore_eos and min_tokens held per row


def test_one_rows_stop_event_ends_that_row_only(engine: Any) -> None:
    from hfd.backends.vlm_batch import VisionRow

    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    first, second = _prompt(engine, [0], "one"), _prompt(engine, [1], "two")
    alone: list[int] = []
    engine.generate(second, params, alone.extend, threading.Event())
    stop = threading.Event()
    got: tuple[list[int], list[int]] = ([], [])

    def emit(ids: list[int]) -> None:
        got[0].extend(ids)
        if len(got[0]) == 3:
            stop.set()

    rows = [VisionRow(first, params, emit, stop), VisionRow(second, params, got[1].extend, threading.Event())]
    assert engine.generate_batch(rows) == ["cancelled", "length"]
    assert len(got[0]) == 3 and got[1] == alone
