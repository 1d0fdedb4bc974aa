"""One request of each kind over each door, timed: the official OpenAI client over HTTP and
``hfd.client.AsyncClient`` over IPC."""

from __future__ import annotations

import contextlib
import time
import types
from typing import Any

import httpx

from bench_lib.load import Sample


def openai_client(base_url: str, connections: int, *, keepalive_s: float = 5.0) -> Any:
    """``keepalive_s``: how long an idle connection is kept for reuse. Interleaved rounds
    (``bench_lib.rounds``) leave a server's connections idle while the others are measured;
    kept past the server's own idle timeout (llama-server's is 5 s), the next request on one
    fails with a connection error."""
    import openai

    sdk_httpx: types.ModuleType = httpx
    with contextlib.suppress(ImportError):  # recent SDKs ship their own fork of httpx
        import httpx2 as sdk_httpx
    # A connection pool as large as the number of concurrent clients.
    limits = sdk_httpx.Limits(
        max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=keepalive_s
    )
    http = openai.DefaultAsyncHttpxClient(limits=limits)
    return openai.AsyncOpenAI(
        base_url=base_url, api_key="bench", max_retries=0, timeout=600.0, http_client=http
    )


def ipc_client(endpoint: str) -> Any:
    from hfd.client import AsyncClient

    return AsyncClient(endpoint, timeout=600.0)


def _fixed_length(tokens: int) -> dict[str, Any]:
    # Lengths are fixed so every run does the same work, whatever the random weights say.
    return {"ignore_eos": True, "min_tokens": tokens}


async def http_chat(client: Any, model: str, messages: list[dict[str, Any]], tokens: int) -> Sample:
    started = time.perf_counter()
    ttft: float | None = None
    produced = counted = 0
    stream = await client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=_fixed_length(tokens),
    )
    async for chunk in stream:
        if any(choice.delta.content for choice in chunk.choices):
            counted += 1
            if ttft is None:
                ttft = time.perf_counter() - started
        if chunk.usage is not None:
            produced = chunk.usage.completion_tokens
    return Sample(latency=time.perf_counter() - started, units=produced or counted, ttft=ttft)


async def ipc_chat(client: Any, model: str, messages: list[dict[str, Any]], tokens: int) -> Sample:
    started = time.perf_counter()
    ttft: float | None = None
    counted = 0
    stream = await client.chat.completions.create(
        model=model, messages=messages, max_tokens=tokens, temperature=0, stream=True, **_fixed_length(tokens)
    )
    async with stream:
        async for chunk in stream:
            if any(choice.delta.content for choice in chunk.choices):
                counted += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    produced = stream.usage.completion_tokens if stream.usage is not None else 0
    return Sample(latency=time.perf_counter() - started, units=produced or counted, ttft=ttft)


async def http_embed(client: Any, model: str, texts: list[str]) -> Sample:
    started = time.perf_counter()
    result = await client.embeddings.create(model=model, input=texts)
    assert len(result.data) == len(texts)
    return Sample(latency=time.perf_counter() - started, units=len(texts))


async def ipc_embed(client: Any, model: str, texts: list[str]) -> Sample:
    started = time.perf_counter()
    result = await client.embeddings.create(model=model, input=texts)
    assert len(result.data) == len(texts)
    return Sample(latency=time.perf_counter() - started, units=len(texts))
