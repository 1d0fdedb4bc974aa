"""The model manager over the fake engine (no torch): one load for many first requests, a load
failure reaching the caller, an engine that dies being loaded again, and the fake engine chosen
for unpinned models only when ``HFD_FAKE_ENGINE`` asks for it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support.fake_models import fake_model

from hfd.backends import registry
from hfd.backends.base import SamplingParams
from hfd.client.errors import HfdError, ModelUnavailable
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.models.refs import resolve_local
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytestmark = pytest.mark.anyio


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    return fake_model(tmp_path / "models")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., ModelManager]]:
    made: list[ModelManager] = []

    def factory(*specs: ModelSpec) -> ModelManager:
        base = load_settings(
            environ={"HFD_CACHE_DIR": str(tmp_path / "cache"), "HFD_STATE_DIR": str(tmp_path / "state")}
        )
        manager = ModelManager(
            with_overrides(base, models=specs), resolve=resolve_local, budgets=Budgets({RAM: 1 << 40})
        )
        made.append(manager)
        return manager

    yield factory
    for manager in made:
        await manager.aclose()


def fake(path: Path, name: str = "g", **options: Any) -> ModelSpec:
    return ModelSpec(ref=str(path), name=name, engine="fake", options=options)


async def generate(manager: ModelManager, name: str, n: int = 4) -> int:
    async with manager.acquire(name) as lm:
        stream = lm.generation().submit([10, 11, 12], SamplingParams(max_tokens=n, ignore_eos=True))
        return sum([len(chunk.token_ids) async for chunk in stream])


async def test_ten_concurrent_first_requests_cause_one_load(make: Any, snapshot: Path) -> None:
    manager = make(fake(snapshot))
    got: list[int] = []

    async def request() -> None:
        got.append(await generate(manager, "g"))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(request)
    assert got == [4] * 10
    assert manager.counters["loads"] == 1
    assert manager.loaded()[0].info(0)["engine"] == "fake"


async def test_a_load_failure_reaches_the_caller(make: Any, snapshot: Path) -> None:
    manager = make(fake(snapshot, fail_at_load="injected load failure"))
    with pytest.raises(ModelUnavailable, match="injected load failure"):
        await manager.load("g")
    assert manager.loaded() == []


async def test_an_engine_that_died_is_loaded_again(make: Any, snapshot: Path) -> None:
    manager = make(fake(snapshot, die_at_step=2))
    with pytest.raises(HfdError, match="died"):
        await generate(manager, "g")
    first = manager.loaded()[0]
    assert not first.model.alive  # type: ignore[attr-defined]
    # The next request finds the engine gone and loads the model afresh (which would die at
    # its second step too: one token is done by then).
    assert await generate(manager, "g", n=1) == 1
    assert manager.counters["loads"] == 2
    assert manager.loaded()[0] is not first


async def test_an_encoder_on_the_fake_engine(make: Any, tmp_path: Path) -> None:
    manager = make(fake(fake_model(tmp_path / "models", "bert"), name="e", dimensions=4))
    async with manager.acquire("e") as lm:
        assert lm.task == "embed"
        result = await lm.encoder().embed(["one text", "another text"])
    assert result.vectors.shape == (2, 4)


async def test_the_fake_engine_is_chosen_unpinned_only_when_asked(
    make: Any, snapshot: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(registry.FAKE_ENGINE_ENV, "1")
    manager = make(ModelSpec(ref=str(snapshot), name="u"))
    assert await generate(manager, "u") == 4
    assert manager.loaded()[0].info(0)["engine"] == "fake"
