"""The OpenVINO vision chat engine (``backends/vlm_openvino``, GenAI's VLMPipeline in its own
process) against transformers' own greedy ``generate`` on the same images and text, token for
token (GenAI's streamer hands back token ids), on a tiny LLaVA with llava-hf's template; its
prompt ids are the torch engine's; a stop event set from another thread ends generation;
ignore_eos gives exactly max_tokens; the in-process pipeline gives the same tokens; a killed
engine process fails the request as unavailable and the model reports itself dead; a LLaVA
whose template lacks the newline GenAI writes after each image is refused before any export."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import media_models, vlm_models
from support.models import REPO_ROOT
from support.vlm_openvino_models import tiny_llava_hf

from hfd.backends.base import LoadOptions, SamplingParams, is_alive
from hfd.client.errors import ModelUnavailable

pytest.importorskip("torch", reason="the oracle is transformers on torch")
pytest.importorskip("openvino_genai", reason="the engine is OpenVINO GenAI")
pytest.importorskip("optimum.intel", reason="the export is optimum-intel's")

PROMPT = "what is in this picture?"
IMAGES = [media_models.png(width=48, height=40, seed=3), media_models.png(width=70, height=30, seed=4)]
EXPORTS = REPO_ROOT / ".cache" / "test-exports"


def _options(path: Path, **extra: Any) -> LoadOptions:
    return LoadOptions(path=path, task="vision-chat", device="cpu", dtype="float32", cache_dir=EXPORTS,
                       extra=extra)  # fmt: skip


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from hfd.backends import vlm_openvino

    vlm = vlm_openvino.load(_options(tiny_llava_hf()))
    yield vlm
    vlm.close()


def _prompt(engine: Any, count: int) -> Any:
    from PIL import Image

    images = [Image.open(io.BytesIO(raw)).convert("RGB") for raw in IMAGES[:count]]
    content = [*({"type": "image"} for _ in images), {"type": "text", "text": PROMPT}]
    return engine.prepare([{"role": "user", "content": content}], images)


def _greedy(engine: Any, count: int, tokens: int = 16) -> tuple[list[int], str]:
    got: list[int] = []
    finish = engine.generate(_prompt(engine, count), SamplingParams(max_tokens=tokens, temperature=0), got.extend,
                             threading.Event())  # fmt: skip
    return got, finish


@pytest.mark.parametrize("count", [1, 2])
def test_greedy_tokens_equal_generate(engine: Any, count: int) -> None:
    want = vlm_models.oracle_generate(tiny_llava_hf(), IMAGES[:count], PROMPT, 16)
    got, finish = _greedy(engine, count)
    assert got == want
    assert finish == ("length" if len(got) == 16 else "stop")


def test_prompt_ids_are_the_torch_engines(engine: Any) -> None:
    from hfd.backends import vlm_torch

    torch_engine = vlm_torch.load(LoadOptions(path=tiny_llava_hf(), task="vision-chat", device="cpu"))
    assert _prompt(engine, 2).ids == _prompt(torch_engine, 2).ids
    assert _prompt(engine, 2).tokens > 32  # 16 image tokens each


def test_a_stop_from_another_thread_ends_generation(engine: Any) -> None:
    # As a client that goes away: the event loop sets the stop event while the worker generates.
    stop, first = threading.Event(), threading.Event()
    got: list[int] = []
    threading.Thread(target=lambda: first.wait(60) and stop.set(), daemon=True).start()
    params = SamplingParams(max_tokens=2000, temperature=0, ignore_eos=True)
    finish = engine.generate(_prompt(engine, 1), params, lambda ids: (got.extend(ids), first.set()), stop)
    assert finish == "cancelled"
    assert 1 <= len(got) < 2000
    # The engine serves the next request in full after a stopped one.
    assert _greedy(engine, 1)[0] == vlm_models.oracle_generate(tiny_llava_hf(), IMAGES[:1], PROMPT, 16)


def test_ignore_eos_gives_max_tokens(engine: Any) -> None:
    got: list[int] = []
    params = SamplingParams(max_tokens=20, temperature=0.9, seed=7, ignore_eos=True)
    assert engine.generate(_prompt(engine, 1), params, got.extend, threading.Event()) == "length"
    assert len(got) == 20


def test_in_process_pipeline_gives_the_same_tokens(engine: Any) -> None:
    from hfd.backends import vlm_openvino
    from hfd.backends.vlm_openvino_process import LocalVision

    local = vlm_openvino.load(_options(tiny_llava_hf(), pipeline_process=False))
    try:
        assert isinstance(local.runner, LocalVision)
        assert _greedy(local, 2) == _greedy(engine, 2)
    finally:
        local.close()


def test_a_killed_engine_process_fails_the_request_and_the_model() -> None:
    from hfd.backends import vlm_openvino

    vlm = vlm_openvino.load(_options(tiny_llava_hf()))
    try:
        assert is_alive(vlm)
        os.kill(vlm.runner.pid, signal.SIGKILL)
        with pytest.raises(ModelUnavailable, match="engine process exited"):
            _greedy(vlm, 1)
        assert not is_alive(vlm)
    finally:
        vlm.close()


def test_a_llava_template_without_the_newline_is_refused_before_exporting(tmp_path: Path) -> None:
    from hfd.backends import vlm_openvino

    opts = LoadOptions(path=vlm_models.tiny_llava(), task="vision-chat", device="cpu", cache_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match="writes '\\\\n' after each <image>"):
        vlm_openvino.load(opts)
    assert not any(tmp_path.iterdir())  # nothing was exported


def test_an_image_larger_than_one_pipe_read_reaches_the_engine_process(engine: Any) -> None:
    from PIL import Image

    raw = media_models.png(width=336, height=336, seed=1)  # 330 KiB of pixels: several reads
    content = [{"type": "image"}, {"type": "text", "text": PROMPT}]
    prompt = engine.prepare(
        [{"role": "user", "content": content}], [Image.open(io.BytesIO(raw)).convert("RGB")]
    )
    got: list[int] = []
    engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0), got.extend, threading.Event())
    assert got == vlm_models.oracle_generate(tiny_llava_hf(), [raw], PROMPT, 8)
