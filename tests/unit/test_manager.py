"""The model manager over the fake engine (no torch: the manager's logic does not depend on
what computes): one load for many first requests, keep-alive on an injectable clock, memory
budgets with LRU eviction (the estimates read the model folders' real config and weights
files), and the circuit breaker around requests."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from support.clocks import Clock, CountingResolver
from support.fake_models import fake_model

from hfd.client.errors import InsufficientMemory, InternalError, InvalidRequest, ModelUnavailable
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.settings import ModelSpec, Settings, load_settings, with_overrides

pytestmark = pytest.mark.anyio

ENGINE = "fake"


def settings(tmp_path: Path, *specs: ModelSpec, **changes: Any) -> Settings:
    base = load_settings(
        environ={"HFD_CACHE_DIR": str(tmp_path / "cache"), "HFD_STATE_DIR": str(tmp_path / "state")}
    )
    return with_overrides(base, models=specs, **changes)


MODELS = Path(tempfile.mkdtemp(prefix="hfd-test-manager-"))  # removed at exit (atexit, below)
atexit.register(shutil.rmtree, MODELS, True)


def bert(name: str, **kw: Any) -> ModelSpec:
    return ModelSpec(
        ref=str(fake_model(MODELS, "bert")), name=name, engine=ENGINE, device="cpu", threads=1, **kw
    )


def llama(name: str, **kw: Any) -> ModelSpec:
    return ModelSpec(
        ref=str(fake_model(MODELS, "llama")),
        name=name,
        engine=ENGINE,
        device="cpu",
        threads=1,
        max_running=4,
        **kw,
    )


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., tuple[ModelManager, Clock, CountingResolver]]]:
    made: list[ModelManager] = []

    def factory(
        *specs: ModelSpec, budget: int = 1 << 40, **changes: Any
    ) -> tuple[ModelManager, Clock, CountingResolver]:
        clock, resolver = Clock(), CountingResolver()
        manager = ModelManager(
            settings(tmp_path, *specs, **changes),
            resolve=resolver,
            clock=clock,
            budgets=Budgets({RAM: budget}),
        )
        made.append(manager)
        return manager, clock, resolver

    yield factory
    for manager in made:
        await manager.aclose()


def names(manager: ModelManager) -> set[str]:
    return {lm.name for lm in manager.loaded()}


# ----------------------------------------------------------------------------- loading


async def test_ten_concurrent_first_requests_cause_one_load(make: Any) -> None:
    manager, _, resolver = make(bert("b"))
    seen: list[int] = []

    async def request() -> None:
        async with manager.acquire("b") as lm:
            seen.append(id(lm))
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(request)
    assert resolver.calls == {"b": 1}
    assert manager.counters["loads"] == 1
    assert len(set(seen)) == 1 and len(seen) == 10
    assert manager.loaded()[0].in_use == 0


async def test_ps_info_has_memory_expiry_and_breaker(make: Any) -> None:
    manager, clock, _ = make(llama("g", keep_alive=60.0))
    lm = await manager.load("g")
    info = lm.info(clock())
    assert info["engine"] == ENGINE and info["device"] == "cpu" and info["task"] == "generate"
    assert info["memory_bytes"] > 0
    est = info["memory_estimate"]
    assert est["total"] == est["weights"] + est["kv_cache"] + est["activations"] + est["overhead"]
    assert est["kv_cache"] > 0 and info["memory_reserved_bytes"] >= est["total"]
    assert info["expires_in"] == 60.0 and info["breaker"]["state"] == "closed"
    assert manager.stats()["memory"][RAM]["models"] == ["g"]


# ----------------------------------------------------------------------------- keep-alive


async def test_keep_alive_zero_unloads_after_the_request(make: Any) -> None:
    manager, _, _ = make(bert("b"))
    async with manager.acquire("b", keep_alive=0):
        assert await manager.reap() == []  # in use: never unloaded
    assert await manager.reap() == ["b"]
    assert manager.loaded() == []
    assert manager.stats()["memory"][RAM]["used_bytes"] == 0


async def test_keep_alive_zero_with_the_reaper_running(make: Any) -> None:
    manager, _, _ = make(bert("b"))
    async with anyio.create_task_group() as tg:
        await tg.start(manager.run)
        async with manager.acquire("b", keep_alive=0):
            pass
        with anyio.fail_after(30):
            while manager.loaded():  # noqa: ASYNC110 (the reaper runs on its own; nothing to wait on)
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert manager.counters["unloads"] == 1


async def test_short_keep_alive_expires_on_the_clock(make: Any) -> None:
    manager, clock, _ = make(bert("b"))
    async with manager.acquire("b", keep_alive=30):
        clock.now += 1000  # time in use does not count
    clock.now += 29
    assert await manager.reap() == []
    assert manager.loaded()[0].info(clock())["expires_in"] == pytest.approx(1.0)
    clock.now += 1
    assert await manager.reap() == ["b"]


async def test_negative_keep_alive_keeps_it_and_the_last_request_sets_the_timer(make: Any) -> None:
    manager, clock, _ = make(bert("b"), default_keep_alive=10.0)
    async with manager.acquire("b", keep_alive=-1):
        pass
    clock.now += 1e9
    assert await manager.reap() == []
    assert manager.loaded()[0].info(clock())["expires_in"] is None
    async with manager.acquire("b"):  # no keep_alive: the default applies again
        pass
    clock.now += 10
    assert await manager.reap() == ["b"]


async def test_load_with_keep_alive(make: Any) -> None:
    manager, clock, _ = make(bert("b"))
    await manager.load("b", keep_alive=5)
    clock.now += 5
    assert await manager.reap() == ["b"]


# ----------------------------------------------------------------------------- memory


async def test_third_model_evicts_the_least_recently_used_idle_one(make: Any) -> None:
    manager, clock, _ = make(bert("a"), bert("b"), bert("c"))
    one = (await manager.load("a")).reserved_bytes
    manager.budgets.limits[RAM] = int(2.5 * one)  # room for two
    async with manager.acquire("b"):
        pass
    clock.now += 1
    async with manager.acquire("a"):  # a is now more recently used than b
        pass
    clock.now += 1
    async with manager.acquire("c"):
        assert names(manager) == {"a", "c"}
    assert manager.counters["evictions"] == 1
    assert manager.budgets.used(RAM) <= manager.budgets.limit(RAM)


async def test_a_model_in_use_is_never_evicted(make: Any) -> None:
    manager, _, _ = make(bert("a"), bert("b"), bert("c"), memory_wait_timeout=0.2)
    one = (await manager.load("a")).reserved_bytes
    manager.budgets.limits[RAM] = int(2.5 * one)
    async with manager.acquire("a"), manager.acquire("b"):
        with pytest.raises(ModelUnavailable) as info:
            await manager.load("c")
        assert info.value.retry_after and info.value.retry_after > 0
        assert "busy" in info.value.message
        assert names(manager) == {"a", "b"}
    assert manager.counters["evictions"] == 0


async def test_a_load_waits_for_a_busy_model_to_become_idle(make: Any) -> None:
    manager, _, _ = make(bert("a"), bert("b"), bert("c"), memory_wait_timeout=120)
    one = (await manager.load("a")).reserved_bytes
    manager.budgets.limits[RAM] = int(2.5 * one)
    holding_b, release_b, loaded_c = anyio.Event(), anyio.Event(), anyio.Event()

    async def hold_b() -> None:
        async with manager.acquire("b"):
            holding_b.set()
            await release_b.wait()

    async def want_c() -> None:
        async with manager.acquire("c"):
            loaded_c.set()

    async with manager.acquire("a"), anyio.create_task_group() as tg:
        tg.start_soon(hold_b)
        await holding_b.wait()
        tg.start_soon(want_c)
        await anyio.wait_all_tasks_blocked()
        assert not loaded_c.is_set() and names(manager) == {"a", "b"}
        release_b.set()
        await loaded_c.wait()
        assert names(manager) == {"a", "c"}  # b went, a (in use) stayed


async def test_a_model_larger_than_the_budget_is_refused(make: Any) -> None:
    manager, _, _ = make(llama("g"), budget=10 * 1024 * 1024)
    with pytest.raises(InsufficientMemory) as info:
        await manager.load("g")
    err = info.value
    assert err.status == 507
    assert "MiB" in err.message and "budget" in err.message
    assert err.details["needed_bytes"] > err.details["budget_bytes"] == 10 * 1024 * 1024
    assert manager.loaded() == [] and manager.budgets.used(RAM) == 0
    assert manager.breakers.get("g", ENGINE).state == "closed"  # not the model's fault


# ----------------------------------------------------------------------------- breaker


async def test_engine_errors_during_requests_open_the_breaker(make: Any) -> None:
    manager, clock, _ = make(bert("b"), bert("other"), breaker_failures=2, breaker_cooldown=10)
    for _ in range(3):  # the client's own mistakes are no evidence either way
        with pytest.raises(InvalidRequest):
            async with manager.acquire("b"):
                raise InvalidRequest("bad input")
    for _ in range(2):
        with pytest.raises(InternalError):
            async with manager.acquire("b"):
                raise InternalError("the engine failed")
    with pytest.raises(ModelUnavailable) as info:
        async with manager.acquire("b"):
            pytest.fail("an open breaker lets no request through")
    assert info.value.retry_after == pytest.approx(10.0)
    assert manager.loaded()[0].info(clock())["breaker"]["state"] == "open"
    async with manager.acquire("other"):  # other models are unaffected
        pass
    clock.now += 10
    async with manager.acquire("b"):  # the probe
        pass
    assert manager.breakers.get("b", ENGINE).state == "closed"


def test_an_engine_in_its_own_process_is_charged_for_that_process(tmp_path: Path) -> None:
    from hfd.backends.base import LoadOptions
    from hfd.daemon.models.memory import ENGINE_PROCESS_BYTES

    manager = ModelManager(settings(tmp_path))
    path = fake_model(tmp_path, "llama")

    def overhead(engine: str, **extra: object) -> int:
        opts = LoadOptions(path=path, task="generate", max_running=4, extra=dict(extra))
        return manager.loader.estimate(path, "generate", engine, opts).overhead

    assert overhead("openvino") == overhead("torch") + ENGINE_PROCESS_BYTES
    assert overhead("openvino", pipeline_process=False) == overhead("torch")
    assert overhead("openvino", pipeline_process="false") == overhead("torch")


def test_a_draft_models_weights_are_counted_in_the_estimate(tmp_path: Path) -> None:
    from hfd.backends.base import LoadOptions
    from hfd.backends.openvino_speculative import DRAFT_PATH
    from hfd.daemon.models.memory import weights_bytes

    manager = ModelManager(settings(tmp_path))
    path, draft = fake_model(tmp_path / "main", "llama"), fake_model(tmp_path / "draft", "llama")

    def weights(**extra: object) -> int:  # int8 weights: the draft is counted at the model's format
        opts = LoadOptions(path=path, task="generate", max_running=4, weight_format="int8", extra=dict(extra))
        return manager.loader.estimate(path, "generate", "openvino", opts).weights

    alone = weights()
    assert 0 < weights_bytes(draft, "int8") < weights_bytes(draft)
    assert weights(**{DRAFT_PATH: str(draft)}) == alone + weights_bytes(draft, "int8")
