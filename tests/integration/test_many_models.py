"""Many models on one box, through the service with real schedulers and the torch engine: the
response cache in front of embeddings and deterministic generation, circuit breakers around a
model whose files are broken, and models rotating under a memory budget."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.clocks import Clock, CountingResolver
from support.models import tiny_bert, tiny_llama

from hfd.client.errors import ModelUnavailable
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from hfd.daemon.service import Service
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytestmark = pytest.mark.anyio


def spec(path: Path, name: str, **kw: Any) -> ModelSpec:
    return ModelSpec(ref=str(path), name=name, engine="torch", device="cpu", threads=1, max_running=4, **kw)


Make = Callable[..., tuple[Service, Clock, CountingResolver]]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    made: list[Service] = []

    def factory(
        *specs: ModelSpec, budget: int = 1 << 40, **changes: Any
    ) -> tuple[Service, Clock, CountingResolver]:
        base = load_settings(
            environ={"HFD_CACHE_DIR": str(tmp_path / "cache"), "HFD_STATE_DIR": str(tmp_path / "st")}
        )
        settings = with_overrides(base, models=specs, **changes)
        clock, resolver = Clock(), CountingResolver()
        manager = ModelManager(settings, resolve=resolver, clock=clock, budgets=Budgets({RAM: budget}))
        service = Service(settings, manager)
        made.append(service)
        return service, clock, resolver

    yield factory
    for service in made:
        await service.manager.aclose()


def batches(service: Service, name: str) -> int:
    lm = next(lm for lm in service.manager.loaded() if lm.name == name)
    return int(lm.encoder().stats().batches)


# ----------------------------------------------------------------------------- response cache


async def test_an_embedding_cache_hit_returns_the_same_bytes_without_computing(make: Make) -> None:
    service, _, _ = make(spec(tiny_bert(), "b"))
    req = EmbeddingRequest(model="b", input=["the quick brown fox", "rivers flow to the sea"])
    miss = await service.embed(req)
    computed = batches(service, "b")
    hit = await service.embed(req.model_copy(update={"encoding_format": "base64", "user": "someone"}))
    assert not miss.cached and hit.cached
    assert hit.vectors.tobytes() == miss.vectors.tobytes()
    assert hit.prompt_tokens == miss.prompt_tokens and hit.model == "b"
    assert batches(service, "b") == computed  # the model did not run

    bypass = await service.embed(req.model_copy(update={"cache": False}))
    assert not bypass.cached and batches(service, "b") > computed
    shorter = await service.embed(req.model_copy(update={"dimensions": 8}))
    assert not shorter.cached and shorter.vectors.shape == (2, 8)
    stats = service.stats()["cache"]
    assert stats["hits"] == 1 and stats["stores"] == 2 and stats["bytes"] > 0


async def test_a_hit_needs_no_loaded_model(make: Make) -> None:
    service, _, resolver = make(spec(tiny_bert(), "b"))
    req = EmbeddingRequest(model="b", input="cats sleep for most of the day")
    miss = await service.embed(req)
    assert await service.unload("b")
    hit = await service.embed(req)
    assert hit.cached and hit.vectors.tobytes() == miss.vectors.tobytes()
    assert service.manager.loaded() == [] and resolver.calls == {"b": 1}


async def test_a_changed_model_file_misses(make: Make, tmp_path: Path) -> None:
    model = tmp_path / "bert"
    shutil.copytree(tiny_bert(), model)
    service, _, _ = make(spec(model, "b"))
    req = EmbeddingRequest(model="b", input="hello")
    await service.embed(req)
    await service.unload("b")
    (model / "config.json").write_text((model / "config.json").read_text() + "\n")
    assert not (await service.embed(req)).cached


async def _chunks(gen: Any) -> list[tuple[str, list[int], str | None]]:
    return [(c.text, list(c.token_ids), c.finish_reason) async for c in gen]


async def test_deterministic_generation_is_cached_and_replayed(make: Make) -> None:
    service, _, _ = make(spec(tiny_llama(), "g"))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    req = ChatCompletionRequest.model_validate(
        {"model": "g", "messages": messages, "temperature": 0, "max_tokens": 8, "ignore_eos": True}
    )
    first = await service.chat(req)
    miss = await _chunks(first)
    assert not first.cached and first.finish_reason == "length"
    replay = await service.chat(req.model_copy(update={"stream": True}))
    assert replay.cached
    assert await _chunks(replay) == miss
    assert replay.usage() == first.usage()
    assert replay.finish_reason == "length"

    # A seeded sampler is cached per seed; an unseeded one is not cached at all.
    seeded = req.model_copy(update={"temperature": 0.9, "seed": 7})
    a = await service.chat(seeded)
    text_a = await _chunks(a)
    b = await service.chat(seeded)
    assert b.cached and await _chunks(b) == text_a
    other_seed = await service.chat(seeded.model_copy(update={"seed": 8}))
    assert not other_seed.cached
    await _chunks(other_seed)
    stores = service.stats()["cache"]["stores"]
    for _ in range(2):
        random = await service.chat(req.model_copy(update={"temperature": 0.9}))
        assert not random.cached
        await _chunks(random)
    assert service.stats()["cache"]["stores"] == stores


async def test_completions_and_a_cancelled_stream_are_not_confused(make: Make) -> None:
    service, _, _ = make(spec(tiny_llama(), "g"))
    req = CompletionRequest(
        model="g", prompt="The quick brown fox", temperature=0, max_tokens=6, ignore_eos=True
    )
    gen = await service.complete(req)
    async for _ in gen:
        break  # the client goes away after one chunk: nothing is cached
    await gen.aclose()
    again = await service.complete(req)
    assert not again.cached
    full = await _chunks(again)
    cached = await service.complete(req)
    assert cached.cached and await _chunks(cached) == full


async def test_the_cache_persists_across_restarts(make: Make) -> None:
    first, _, _ = make(spec(tiny_bert(), "b"), cache_persist=True)
    req = EmbeddingRequest(model="b", input=["a journey of a thousand miles"])
    miss = await first.embed(req)
    await first.manager.aclose()
    second, _, _ = make(spec(tiny_bert(), "b"), cache_persist=True)
    hit = await second.embed(req)  # loads the model to learn its identity, then hits
    assert hit.cached and hit.vectors.tobytes() == miss.vectors.tobytes()


# ----------------------------------------------------------------------------- circuit breaker


async def test_broken_files_open_the_breaker_and_repaired_files_close_it(make: Make, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert(), broken)
    weights = broken / "model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[:8] + b"{not json" + good[17:])
    service, clock, resolver = make(
        spec(broken, "broken"), spec(tiny_bert(), "ok"), breaker_failures=3, breaker_cooldown=30
    )
    req = EmbeddingRequest(model="broken", input="hello")

    # Concurrent first requests share the one failed load.
    errors: list[ModelUnavailable] = []

    async def attempt() -> None:
        try:
            await service.embed(req)
        except ModelUnavailable as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(attempt)
    assert len(errors) == 4 and resolver.calls["broken"] == 1

    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            await service.embed(req)
    assert resolver.calls["broken"] == 3
    with pytest.raises(ModelUnavailable) as info:  # open: answered at once, no load tried
        await service.embed(req)
    assert resolver.calls["broken"] == 3
    assert info.value.status == 503 and info.value.retry_after == pytest.approx(30.0)
    assert service.stats()["models"]["breakers"]["broken"]["state"] == "open"

    ok = await service.embed(EmbeddingRequest(model="ok", input="hello"))  # others keep serving
    assert ok.vectors.shape[0] == 1

    weights.write_bytes(good)
    clock.now += 29
    with pytest.raises(ModelUnavailable):
        await service.embed(req)
    clock.now += 1
    fixed = await service.embed(req)  # the probe loads the repaired model
    assert fixed.vectors.shape == ok.vectors.shape
    assert service.manager.breakers.get("broken", "torch").state == "closed"
    assert "broken" not in service.stats()["models"]["breakers"]
    row = next(r for r in service.ps() if r["name"] == "broken")
    assert row["breaker"]["state"] == "closed"


# ----------------------------------------------------------------------------- rotation


async def test_three_models_rotate_under_a_budget_for_two(make: Make) -> None:
    service, clock, resolver = make(spec(tiny_bert(), "a"), spec(tiny_bert(), "b"), spec(tiny_llama(), "g"))
    manager = service.manager
    await manager.load("g")
    await manager.load("a")
    biggest = max(lm.reserved_bytes for lm in manager.loaded())
    manager.budgets.limits[RAM] = sum(lm.reserved_bytes for lm in manager.loaded()) + biggest // 2
    await service.unload("a")
    await service.unload("g")
    chat = ChatCompletionRequest.model_validate(
        {"model": "g", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "cache": False}
    )
    for i in range(2):
        for name in ("a", "b", "g"):
            clock.now += 1
            if name == "g":
                gen = await service.chat(chat)
                assert len(await gen.text()) >= 0 and gen.finish_reason in ("stop", "length")
            else:
                await service.embed(EmbeddingRequest(model=name, input=f"round {i}", cache=False))
            assert len(manager.loaded()) <= 2
            assert manager.budgets.used(RAM) <= manager.budgets.limit(RAM)
    assert manager.counters["evictions"] >= 4
    assert resolver.calls["g"] >= 2
