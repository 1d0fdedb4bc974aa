"""Vision chat through a real ``hfd serve``: the official ``openai`` client sends an image as a
data: URL in ``image_url`` parts, streamed and not, to tiny LLaVA, Qwen2-VL, Idefics3, SmolVLM
and Gemma 3 models; the greedy tokens equal transformers' own ``generate`` on the same image and
text (inputs built by transformers' processor, or the family's image processor plus its marker
expansion); concurrent requests equal one-at-a-time ones, and those waiting together share one
batched engine call; bad images, too many pixels or images, and image URLs (not
fetched by default) are 400s naming the part; a text-only chat model sent an image is a 400."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import media_models, vlm_models
from support.daemon import Daemon, running_daemon
from support.models import tiny_llama
from support.tool_models import function_tool

pytest.importorskip("torch", reason="vision chat runs on the torch engine")
openai = pytest.importorskip("openai")

PROMPT = "what is in this picture?"
IMAGE = media_models.png(width=48, height=40, seed=3)
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def paths() -> dict[str, Path]:
    return {**{name: build() for name, build in vlm_models.tiny_models().items()}, "llama": tiny_llama()}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, paths: dict[str, Path]) -> Iterator[Daemon]:
    extra = "[batching]\nimage_max_pixels = 250000\nimage_max_per_request = 2\n"
    with running_daemon(tmp_path_factory.mktemp("vlm"), dict(paths), extra_config=extra,
                        args=["--engine", "torch"]) as d:  # fmt: skip
        yield d


def _messages(*images: bytes, text: str = PROMPT) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": media_models.data_url(raw), "detail": "auto"}}
        for raw in images
    ]
    return [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}]


def _text(path: Path, ids: list[int]) -> str:
    from transformers import AutoTokenizer

    return str(AutoTokenizer.from_pretrained(path).decode(ids, skip_special_tokens=True))


def _client(d: Daemon) -> Any:
    return openai.OpenAI(base_url=d.http + "/v1", api_key="none", max_retries=0, timeout=120)


@pytest.mark.parametrize("name", list(vlm_models.tiny_models()))
def test_greedy_reply_equals_transformers_generate(daemon: Daemon, paths: dict[str, Path], name: str) -> None:
    ids = vlm_models.oracle_generate(paths[name], [IMAGE], PROMPT, MAX_TOKENS)
    expected = _text(paths[name], ids)
    reply = _client(daemon).chat.completions.create(
        model=name,
        messages=_messages(IMAGE),
        max_tokens=MAX_TOKENS,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == expected
    assert reply.usage is not None and reply.usage.prompt_tokens > 16  # the image's tokens count
    assert reply.usage.completion_tokens == len(ids)
    streamed = _client(daemon).chat.completions.create(
        model=name, messages=_messages(IMAGE), max_tokens=MAX_TOKENS, temperature=0, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # tokens came one by one
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    )


def test_two_images_and_text_only_chat(daemon: Daemon, paths: dict[str, Path]) -> None:
    other = media_models.png(width=60, height=30, seed=9)
    expected = _text(
        paths["qwen2-vl"], vlm_models.oracle_generate(paths["qwen2-vl"], [IMAGE, other], PROMPT, MAX_TOKENS)
    )
    reply = _client(daemon).chat.completions.create(
        model="qwen2-vl",
        messages=_messages(IMAGE, other),
        max_tokens=MAX_TOKENS,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.choices[0].message.content == expected
    # A vision chat model answers a chat without images too.
    plain = _client(daemon).chat.completions.create(
        model="llava", messages=[{"role": "user", "content": "hello"}], max_tokens=4, temperature=0
    )
    assert plain.choices[0].finish_reason in ("stop", "length")


def test_concurrent_requests_equal_one_at_a_time(daemon: Daemon) -> None:
    images = [media_models.png(width=30 + 8 * s, height=36, seed=s) for s in range(4)]

    def ask(raw: bytes) -> str:
        r = _client(daemon).chat.completions.create(
            model="llava",
            messages=_messages(raw),
            max_tokens=8,
            temperature=0,  # type: ignore[arg-type]
        )
        return r.choices[0].message.content or ""

    alone = [ask(raw) for raw in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(ask, images))
    assert together == alone


def _media_stats(d: Daemon, model: str) -> dict[str, Any]:
    models = httpx.get(d.http + "/api/ps", timeout=30).json()["models"]
    stats: dict[str, Any] = next(m["scheduler"] for m in models if m["name"] == model)
    return stats


@pytest.mark.parametrize("name", ["llava", "idefics3"])
def test_waiting_requests_share_one_batched_call(daemon: Daemon, name: str) -> None:
    """Four greedy requests that arrive while a long one runs wait, then go into one engine
    call together; each reply equals the same request served alone."""
    import threading
    import time

    images = [media_models.png(width=30 + 8 * s, height=36, seed=s) for s in range(4)]
    client = _client(daemon)

    def ask(raw: bytes, max_tokens: int) -> str:
        r = client.chat.completions.create(
            model=name,
            messages=_messages(raw),
            max_tokens=max_tokens,
            temperature=0,  # type: ignore[arg-type]
        )
        return r.choices[0].message.content or ""

    alone = [ask(raw, 6 + i) for i, raw in enumerate(images)]
    before = _media_stats(daemon, name)
    body = {"model": name, "messages": _messages(IMAGE), "max_tokens": 300, "ignore_eos": True}
    started = threading.Event()

    def long() -> None:
        with httpx.stream(
            "POST", daemon.http + "/v1/chat/completions", json=body | {"stream": True}, timeout=120
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    started.set()

    runner = threading.Thread(target=long)
    runner.start()
    assert started.wait(60)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(ask, raw, 6 + i) for i, raw in enumerate(images)]
        deadline = time.monotonic() + 30
        while _media_stats(daemon, name)["waiting"] < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        together = [f.result() for f in futures]
    runner.join()
    client.close()
    after = _media_stats(daemon, name)
    assert together == alone
    assert after["requests_finished"] - before["requests_finished"] == 5
    assert after["calls"] - before["calls"] == 2  # the long one's, then the four's


def _post(d: Daemon, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(d.http + "/v1/chat/completions", json=body, timeout=120)


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    error: dict[str, Any] = r.json()["error"]
    return error


def test_bad_images_are_400_naming_the_part(daemon: Daemon) -> None:
    base: dict[str, Any] = {"model": "llava", "max_tokens": 4}
    not_image = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}],
        }
    ]
    assert (
        _error(_post(daemon, {**base, "messages": not_image}))["param"]
        == "messages.0.content.0.image_url.url"
    )
    big = media_models.png(width=600, height=600)
    e = _error(_post(daemon, {**base, "messages": _messages(big)}))
    assert e["param"] == "messages.0.content.0.image_url.url" and "pixels" in e["message"]
    e = _error(_post(daemon, {**base, "messages": _messages(IMAGE, IMAGE, IMAGE)}))
    assert e["param"] == "messages" and "3 images" in e["message"]
    url = [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}],
        }
    ]
    e = _error(_post(daemon, {**base, "messages": url}))
    assert "not fetched" in e["message"] and e["param"].startswith("messages.0.content.0")
    e = _error(
        _post(
            daemon, {**base, "messages": _messages(IMAGE), "tools": [function_tool("f", {"type": "object"})]}
        )
    )
    assert e["param"] == "tools"
    # The daemon keeps serving.
    assert _post(daemon, {**base, "messages": _messages(IMAGE)}).status_code == 200


def test_text_only_model_with_an_image_is_400(daemon: Daemon) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _client(daemon).chat.completions.create(model="llama", messages=_messages(IMAGE), max_tokens=4)  # type: ignore[arg-type]
    body: Any = err.value.body
    assert body["param"] == "messages.0.content.0" and "does not take images" in body["message"]


def test_other_apis_send_images_too(daemon: Daemon, paths: dict[str, Path]) -> None:
    """The Responses API's input_image, Anthropic's base64 image block and Ollama's images
    reach the same model with the same image: the same greedy reply as the chat API's."""
    import base64

    anthropic = pytest.importorskip("anthropic")
    ollama = pytest.importorskip("ollama")
    expected = _client(daemon).chat.completions.create(
        model="llava", messages=_messages(IMAGE), max_tokens=MAX_TOKENS, temperature=0  # type: ignore[arg-type]
    ).choices[0].message.content  # fmt: skip
    response = _client(daemon).responses.create(
        model="llava", max_output_tokens=MAX_TOKENS, temperature=0,
        input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": media_models.data_url(IMAGE), "detail": "auto"},
            {"type": "input_text", "text": PROMPT}]}],  # type: ignore[list-item]
    )  # fmt: skip
    assert response.output_text == expected
    b64 = base64.b64encode(IMAGE).decode()
    claude = anthropic.Anthropic(base_url=daemon.http, api_key="none", max_retries=0, timeout=120)
    message = claude.messages.create(
        model="llava", max_tokens=MAX_TOKENS, extra_body={"temperature": 0},
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},
            {"type": "text", "text": PROMPT}]}],
    )  # fmt: skip
    assert "".join(b.text for b in message.content if b.type == "text") == expected
    reply = ollama.Client(host=daemon.http, timeout=120).chat(
        model="llava", messages=[{"role": "user", "content": PROMPT, "images": [b64]}],
        options={"temperature": 0, "num_predict": MAX_TOKENS},
    )  # fmt: skip
    assert reply.message.content == expected


def test_a_client_that_leaves_frees_the_model(daemon: Daemon) -> None:
    """A stream closed after its first tokens stops its generation: the next request does not
    wait for the 400 tokens the first one asked for."""
    import time

    body = {
        "model": "llava",
        "messages": _messages(IMAGE),
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }

    def ask(max_tokens: int) -> float:
        t0 = time.perf_counter()
        reply = _client(daemon).chat.completions.create(
            model="llava", messages=_messages(IMAGE), max_tokens=max_tokens, temperature=0,  # type: ignore[arg-type]
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        assert reply.usage is not None and reply.usage.completion_tokens == max_tokens
        return time.perf_counter() - t0

    with httpx.stream("POST", daemon.http + "/v1/chat/completions", json=body, timeout=120) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        while not next(lines).startswith("data: {"):
            pass
    after_close = ask(4)
    assert after_close < ask(400) / 2
