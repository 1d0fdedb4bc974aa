"""The HTTP door end to end, driven by the official ``openai`` package (sync and async,
streaming and not) against a real ``hfd serve``."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx
import numpy as np
import openai
import pytest

from hfd.client import Client

if TYPE_CHECKING:
    from conftest import Doors

pytestmark = pytest.mark.timeout(300)

# The names the `doors` fixture serves its models under (see conftest.Doors).
CHAT, EMBED, MINILM, CONTEXT = "chat", "emb", "minilm", 256

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
# Fixed-length, deterministic output: greedy, and the end-of-sequence token ignored.
FIXED = {"temperature": 0, "max_tokens": 8}
NO_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def client(doors: Doors) -> openai.OpenAI:
    assert (doors.CHAT, doors.EMBED, doors.MINILM, doors.CONTEXT) == (CHAT, EMBED, MINILM, CONTEXT)
    return openai.OpenAI(base_url=doors.base_url, api_key="unused", max_retries=0, timeout=120)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert {m.id for m in models.data} == {CHAT, EMBED, MINILM}
    assert all(m.object == "model" and m.owned_by == "hfd" for m in models.data)
    assert client.models.retrieve(CHAT).id == CHAT
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_chat_streamed_and_not_give_the_same_reply(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=CHAT, messages=MESSAGES, extra_body=NO_EOS, **FIXED)  # type: ignore[arg-type]
    assert full.object == "chat.completion" and full.model == CHAT and full.id.startswith("chatcmpl-")
    (choice,) = full.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert full.usage is not None
    assert full.usage.completion_tokens == 8 and full.usage.prompt_tokens > 0
    assert full.usage.total_tokens == full.usage.prompt_tokens + 8

    chunks = list(
        client.chat.completions.create(
            model=CHAT,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=NO_EOS,
            **FIXED,  # type: ignore[arg-type]
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    # include_usage: the last chunk has no choices and the request's usage; the others have none.
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True, max_tokens=3))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_completions_streamed_and_not(client: openai.OpenAI) -> None:
    full = client.completions.create(model=CHAT, prompt="The quick brown fox", extra_body=NO_EOS, **FIXED)  # type: ignore[arg-type]
    assert full.object == "text_completion"
    assert full.choices[0].finish_reason == "length" and full.choices[0].text
    assert full.usage is not None and full.usage.completion_tokens == 8
    stream = client.completions.create(
        model=CHAT,
        prompt="The quick brown fox",
        stream=True,
        stream_options={"include_usage": True},
        extra_body=NO_EOS,
        **FIXED,  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == full.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_stop_sequence_ends_with_stop(client: openai.OpenAI) -> None:
    full = client.completions.create(
        model=CHAT, prompt="Numbers like", extra_body=NO_EOS, temperature=0, max_tokens=12
    )
    text = full.choices[0].text
    stop = text[len(text) // 2 :][:2]
    if not stop.strip():
        pytest.skip("the greedy reply has no usable stop string")
    cut = client.completions.create(
        model=CHAT, prompt="Numbers like", stop=[stop], extra_body=NO_EOS, temperature=0, max_tokens=12
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


def test_embeddings_float_and_base64_match_each_other_and_the_ipc_door(
    client: openai.OpenAI, doors: Doors
) -> None:
    texts = ["The weather today is sunny.", "Cats sleep for most of the day."]
    as_float = client.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    as_base64 = client.embeddings.create(model=EMBED, input=texts)  # the SDK asks for base64 and decodes it
    raw = httpx.post(
        doors.base_url + "/embeddings",
        json={"model": EMBED, "input": texts, "encoding_format": "base64"},
        timeout=60,
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)
    a = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    b = np.array([d.embedding for d in as_base64.data], dtype=np.float32)
    assert a.shape == (2, 32) and [d.index for d in as_float.data] == [0, 1]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    assert as_float.usage.prompt_tokens > 0 and as_float.usage.total_tokens == as_float.usage.prompt_tokens
    with Client(doors.ipc) as ipc:
        np.testing.assert_array_equal(ipc.embeddings.create(model=EMBED, input=texts).embeddings, a)
    single = client.embeddings.create(model=EMBED, input=texts[0], encoding_format="float")
    np.testing.assert_allclose(single.data[0].embedding, a[0], rtol=1e-5, atol=1e-6)


def test_real_minilm_ranks_a_paraphrase_above_an_unrelated_sentence(client: openai.OpenAI) -> None:
    texts = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The stock market fell sharply on Tuesday.",
    ]
    vectors = np.array([d.embedding for d in client.embeddings.create(model=MINILM, input=texts).data])
    assert vectors.shape == (3, 384)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    assert unit[0] @ unit[1] > unit[0] @ unit[2] + 0.2


def test_errors_arrive_as_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert nf.value.code == "model_not_found" and nf.value.status_code == 404
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model=CHAT, prompt="word " * (CONTEXT + 50), max_tokens=4)
    assert long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as bad:  # 400, as OpenAI answers an out-of-range value
        client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=0)
    assert bad.value.code == "validation_error" and bad.value.status_code == 400
    with pytest.raises(openai.BadRequestError) as wrong_task:
        client.embeddings.create(model=CHAT, input="x")
    assert wrong_task.value.code == "invalid_request"


def test_async_client_concurrent_streams_and_embeddings(doors: Doors) -> None:
    async def main() -> None:
        aclient = openai.AsyncOpenAI(base_url=doors.base_url, api_key="unused", max_retries=0, timeout=120)

        async def stream(i: int) -> tuple[str, str | None]:
            text, finish = "", None
            s = await aclient.chat.completions.create(
                model=CHAT,
                messages=[{"role": "user", "content": f"count to {i}"}],
                stream=True,
                extra_body=NO_EOS,
                temperature=0,
                max_tokens=6,
            )
            async for c in s:
                if c.choices:
                    text += c.choices[0].delta.content or ""
                    finish = c.choices[0].finish_reason or finish
            return text, finish

        results = await asyncio.gather(*(stream(i) for i in range(4)))
        assert all(text and finish == "length" for text, finish in results)
        emb = await aclient.embeddings.create(model=EMBED, input=["a", "b", "c"])
        assert len(emb.data) == 3
        full = await aclient.completions.create(
            model=CHAT, prompt="Hello", extra_body=NO_EOS, temperature=0, max_tokens=4
        )
        assert full.usage is not None and full.usage.completion_tokens == 4
        await aclient.close()

    asyncio.run(main())


def test_admin_routes(doors: Doors) -> None:
    http = httpx.Client(base_url=doors.http, timeout=120)
    loaded = http.post("/api/load", json={"model": EMBED})
    assert loaded.status_code == 200 and loaded.json()["name"] == EMBED
    assert loaded.json()["engine"] == "torch"
    assert EMBED in doors.ps()
    assert http.post("/api/unload", json={"model": EMBED}).json() == {"model": EMBED, "unloaded": True}
    assert EMBED not in doors.ps()
    assert http.post("/api/unload", json={"model": EMBED}).json()["unloaded"] is False
    assert http.get("/api/version").json()["protocol"] == 1
    hardware = http.get("/api/hardware").json()
    assert "cpu" in hardware and "choices" in hardware
    assert http.get("/health").json()["status"] == "ok"


def test_a_client_that_disconnects_mid_stream_stops_its_generation(doors: Doors) -> None:
    budget = CONTEXT - 40
    body = doors.long_chat(MESSAGES, budget)
    httpx.post(
        doors.base_url + "/completions", json={"model": CHAT, "prompt": "warm", "max_tokens": 1}, timeout=120
    )
    before = doors.wait_idle(CHAT)
    with (
        httpx.Client(timeout=120) as http,
        http.stream("POST", doors.base_url + "/chat/completions", json=body) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if '"content":"' in line and '"role"' not in line:
                break  # one token arrived: now drop the connection
    assert doors.wait_logged("client disconnected; stream cancelled")
    after = doors.wait_idle(CHAT)
    assert after["active"] == 0
    # The sequence left the batch: far fewer tokens than it was allowed were generated.
    assert after["tokens_generated"] - before["tokens_generated"] < budget
