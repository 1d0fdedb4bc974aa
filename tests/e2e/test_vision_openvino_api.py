"""Vision chat on OpenVINO through a real ``hfd serve``: the official ``openai`` client sends one
and two images as data: URLs to a tiny LLaVA (llava-hf's template) pinned to ``engine = "openvino"``; the greedy
replies, streamed (token by token) and not, equal transformers' own ``generate`` on the same
images and text; ``/api/ps`` says OpenVINO serves it in an engine process of its own; a client
that goes away mid-stream is cancelled and the model serves the next request; a family whose replies on
OpenVINO are not checked here (the tiny Qwen2-VL; optimum-intel 2.2.0 could not export it anyway) is
served by torch without an export tried, and the fallback and its reason are logged and shown in
``/api/ps``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import media_models, vlm_models
from support.daemon import Daemon, running_daemon
from support.vlm_openvino_models import tiny_llava_hf

pytest.importorskip("torch", reason="the oracle is transformers on torch")
pytest.importorskip("openvino_genai", reason="the engine is OpenVINO GenAI")
pytest.importorskip("optimum.intel", reason="the export is optimum-intel's")
openai = pytest.importorskip("openai")

PROMPT = "what is in this picture?"
IMAGES = [media_models.png(width=48, height=40, seed=3), media_models.png(width=60, height=30, seed=9)]
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    models = (
        f'[[models]]\nname = "llava"\nref = "{tiny_llava_hf()}"\nengine = "openvino"\n'
        'options = { dtype = "float32" }\n\n'
        f'[[models]]\nname = "unexportable"\nref = "{vlm_models.tiny_qwen2_vl()}"\n'
    )
    extra = "[batching]\nimage_max_per_request = 2\n\n" + models
    with running_daemon(tmp_path_factory.mktemp("vlm-ov"), {}, extra_config=extra) as d:
        yield d


def _messages(*images: bytes) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": media_models.data_url(raw)}}
                                   for raw in images]  # fmt: skip
    return [{"role": "user", "content": [*parts, {"type": "text", "text": PROMPT}]}]


def _expected(path: Path, images: list[bytes]) -> tuple[str, int]:
    from transformers import AutoTokenizer

    ids = vlm_models.oracle_generate(path, images, PROMPT, MAX_TOKENS)
    return str(AutoTokenizer.from_pretrained(path).decode(ids, skip_special_tokens=True)), len(ids)


def _ps(d: Daemon, name: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = httpx.get(d.http + "/api/ps", timeout=10).json()["models"]
    return next(row for row in rows if row["name"] == name)


@pytest.mark.parametrize("count", [1, 2])
def test_greedy_replies_equal_transformers_generate(daemon: Daemon, count: int) -> None:
    expected, tokens = _expected(tiny_llava_hf(), IMAGES[:count])
    client = daemon.openai()
    reply = client.chat.completions.create(model="llava", messages=_messages(*IMAGES[:count]),
                                           max_tokens=MAX_TOKENS, temperature=0)  # fmt: skip
    assert reply.choices[0].message.content == expected
    assert reply.usage is not None and reply.usage.completion_tokens == tokens
    assert reply.usage.prompt_tokens > 16 * count  # each image's 16 tokens count
    chunks = list(client.chat.completions.create(model="llava", messages=_messages(*IMAGES[:count]),
                                                 max_tokens=MAX_TOKENS, temperature=0, stream=True))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # token by token
    row = _ps(daemon, "llava")
    assert (row["engine"], row["fallback_reason"]) == ("openvino", None)


def test_a_client_gone_mid_stream_is_cancelled_and_the_model_serves_on(daemon: Daemon) -> None:
    body = {"model": "llava", "messages": _messages(IMAGES[0]), "max_tokens": 400, "temperature": 0,
            "stream": True, "ignore_eos": True}  # fmt: skip
    with httpx.stream("POST", daemon.http + "/v1/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"' in line:
                break  # the first token: the client goes away
    assert daemon.wait_logged("client disconnected; stream cancelled")
    # The engine process stopped that generation (tests/integration/test_vision_openvino.py shows
    # it ends early) and serves the next request in full.
    expected, _ = _expected(tiny_llava_hf(), IMAGES[:1])
    reply = daemon.openai().chat.completions.create(
        model="llava", messages=_messages(IMAGES[0]), max_tokens=MAX_TOKENS, temperature=0
    )
    assert reply.choices[0].message.content == expected
    assert _ps(daemon, "llava")["engine"] == "openvino"


def test_a_family_not_checked_on_openvino_is_served_by_torch(daemon: Daemon) -> None:
    reply = daemon.openai().chat.completions.create(model="unexportable", messages=_messages(IMAGES[0]),
                                                    max_tokens=4, temperature=0)  # fmt: skip
    assert reply.choices[0].finish_reason in ("stop", "length")
    row = _ps(daemon, "unexportable")
    assert (row["engine"], row["preferred_engine"]) == ("torch", "openvino")
    assert "qwen2_vl vision models are not checked against transformers" in row["fallback_reason"]
    assert daemon.wait_logged("model served by a fallback engine")
