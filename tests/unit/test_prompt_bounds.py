"""The work one request can cause is bounded before any expensive step: a prompt that cannot
fit the context is refused before it is tokenised, embeddings inputs are capped in bytes, and
tokenising a long prompt lets other threads (the event loop) run. Real torch engine, tiny
models built locally."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.models import tiny_bert, tiny_llama
from tokenizers import Tokenizer

from hfd.backends._hf import PromptTokens
from hfd.client.errors import ContextLengthExceeded, InvalidRequest
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, parse
from hfd.daemon.service import Service
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytestmark = pytest.mark.anyio


class Counting:
    """Counts calls of one method of a real object."""

    def __init__(self, target: Any, name: str) -> None:
        self.calls = 0
        real = getattr(target, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        setattr(target, name, counted)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    pytest.importorskip("torch", reason="the torch engine serves these tiny models")
    base = load_settings(environ={"HFD_STATE_DIR": str(tmp_path / "s"), "HFD_CACHE_DIR": str(tmp_path / "c")})
    specs = (
        ModelSpec(ref=str(tiny_llama()), name="chat", engine="torch", device="cpu", threads=1, max_running=2),
        ModelSpec(ref=str(tiny_bert()), name="emb", engine="torch", device="cpu", threads=1),
    )
    settings = with_overrides(base, models=specs, cache_enabled=False, max_input_bytes=1000)
    manager = ModelManager(settings)
    yield Service(settings, manager)
    await manager.aclose()


def chat(content: str) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, {"model": "chat", "messages": [{"role": "user", "content": content}]})


async def test_a_prompt_beyond_the_context_at_any_tokenisation_is_never_tokenised(service: Service) -> None:
    lm = await service.manager.load("chat")
    context = lm.model.context_length  # type: ignore[union-attr]
    template = Counting(lm.model, "apply_chat_template")
    encode = Counting(lm.model, "encode_prompt")
    limit = context * service.settings.prompt_bytes_per_token
    for content in ("x" * (limit + 1), "word " * 2_000_000, "\u00e9" * (limit // 2 + 1)):
        with pytest.raises(ContextLengthExceeded) as info:
            await service.chat(chat(content))
        assert info.value.param == "messages" and info.value.status == 400
    with pytest.raises(ContextLengthExceeded) as info:
        await service.complete(parse(CompletionRequest, {"model": "chat", "prompt": "y" * (limit + 1)}))
    assert info.value.param == "prompt"
    assert (template.calls, encode.calls) == (0, 0)
    # Within the byte bound, the tokenizer decides (this one is still too many tokens).
    with pytest.raises(ContextLengthExceeded):
        await service.chat(chat("word " * (limit // 5)))
    assert template.calls == 1
    gen = await service.chat(chat("hello"))
    await gen.aclose()
    assert template.calls == 2


async def test_embedding_inputs_are_capped_in_bytes_before_tokenising(service: Service) -> None:
    lm = await service.manager.load("emb")
    tokenize = Counting(lm.model, "tokenize")
    with pytest.raises(InvalidRequest) as info:
        await service.embed(parse(EmbeddingRequest, {"model": "emb", "input": ["a" * 600, "b" * 401]}))
    assert info.value.param == "input" and "1001 bytes" in info.value.message
    assert tokenize.calls == 0
    ok = await service.embed(parse(EmbeddingRequest, {"model": "emb", "input": ["a" * 600, "b" * 400]}))
    assert ok.vectors.shape[0] == 2 and tokenize.calls == 1


def test_tokenising_a_long_prompt_lets_other_threads_run() -> None:
    """The Rust tokenizer must release the GIL: while it encodes a 1 MB prompt on one thread,
    another Python thread (in the daemon: the event loop) keeps running."""
    prompt = PromptTokens()
    prompt._tokenizer = Tokenizer.from_file(str(tiny_llama() / "tokenizer.json"))
    text = "the quick brown fox jumps over the lazy dog " * 24_000
    started, done = threading.Event(), threading.Event()
    ids: list[int] = []

    def work() -> None:
        started.set()
        ids.extend(prompt.encode_prompt(text))
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    started.wait()
    ran = 0  # turns this thread got while the encode was under way
    while not done.is_set():
        ran += 1
        time.sleep(0.001)
    worker.join()
    assert len(ids) > 100_000
    # Holding the GIL, the encode would leave this thread a turn or two at its edges at most.
    assert ran >= 20, ran
