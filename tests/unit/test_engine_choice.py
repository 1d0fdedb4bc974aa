"""The engine order measured on this machine (``hfd.daemon.models.engine_choice``), over the fake
engine standing in for each real one with its own latency, so the winner is known: the
measurement ranks by the workload and stores it, a load follows the ranking ahead of the static
order, a restart reuses it without measuring, a changed key measures again, and pins, crash
records and ``measure_engines = false`` still win. No timing is asserted: the latencies differ
twentyfold and only their order is checked."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from support.fake_models import fake_model

from hfd.backends import openvino_process
from hfd.backends.base import LoadOptions, Task
from hfd.backends.fake_backend import FakeBackend
from hfd.backends.hardware import CpuInfo, Device, EngineProbe, HardwareReport, MemoryInfo
from hfd.client.errors import InsufficientMemory, InvalidRequest, ModelUnavailable
from hfd.client.types import RunningModel
from hfd.daemon.cli.client_cmds import ps_table
from hfd.daemon.cli.doctor import measured_rows
from hfd.daemon.models import engine_choice
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.models.refs import resolve_local
from hfd.daemon.settings import ModelSpec, Settings, load_settings, with_overrides

pytestmark = pytest.mark.anyio

# The static order on an x86 CPU: embeddings onnxruntime, openvino, torch; generation openvino,
# onnxruntime cannot generate, torch. Each engine here is the fake engine with this latency (ms).
FASTEST_TORCH = {"torch": 2.0, "openvino": 20.0, "onnxruntime": 40.0}
INTEL = {"cpu": "Intel Xeon", "arch": "x86_64", "features": ["amx_bf16", "avx2", "avx512f"]}


def report() -> HardwareReport:
    """An x86 box with the three engines on its CPU (whether or not they are installed here)."""
    probes = {
        name: EngineProbe(name, True, "1.0", devices=(Device(name, "cpu", "cpu", "cpu"),))
        for name in ("torch", "openvino", "onnxruntime")
    }
    cpu = CpuInfo("AuthenticAMD", "AMD EPYC", "x86_64", 2, 2, 2, ("avx2",))
    memory = MemoryInfo(total_bytes=24 << 30, available_bytes=16 << 30)
    return HardwareReport(system="Linux", python="3.11", cpu=cpu, memory=memory, **probes)


def fake_engines(
    latency_ms: dict[str, float], loads: list[str], kept: list[bool] | None = None
) -> Callable[[str, Task, LoadOptions], Any]:
    """An engine loader that loads the fake engine for every engine name, slowed per name;
    ``kept``: whether each load was told to leave the spare engine process alone."""

    def load(engine: str, task: Task, opts: LoadOptions) -> Any:
        loads.append(engine)
        if kept is not None:
            kept.append(openvino_process._keep_spare.get())
        key = "batch_ms" if task == "embed" else "step_ms"
        opts = dataclasses.replace(opts, extra={**opts.extra, key: latency_ms[engine]})
        backend = FakeBackend()
        return backend.load_encoder(opts) if task == "embed" else backend.load_generator(opts)

    return load


@pytest.fixture
def bert(tmp_path: Path) -> Path:
    return fake_model(tmp_path / "models", "bert")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., tuple[ModelManager, list[str]]]]:
    made: list[ModelManager] = []

    def factory(
        *specs: ModelSpec,
        latency: dict[str, float] = FASTEST_TORCH,
        kept: list[bool] | None = None,
        **overrides: Any,
    ) -> tuple[ModelManager, list[str]]:
        base = load_settings(
            environ={"HFD_CACHE_DIR": str(tmp_path / "cache"), "HFD_STATE_DIR": str(tmp_path / "state")}
        )
        settings: Settings = with_overrides(base, models=specs, **overrides)
        loads: list[str] = []
        manager = ModelManager(
            settings,
            resolve=resolve_local,
            budgets=Budgets({RAM: 1 << 40}),
            load_engine=fake_engines(latency, loads, kept),
            detect_hardware=report,
        )
        made.append(manager)
        return manager, loads

    yield factory
    for manager in made:
        await manager.aclose()


def spec(path: Path, **kw: Any) -> ModelSpec:
    return ModelSpec(ref=str(path), name="m", threads=1, **kw)


async def test_the_measurement_ranks_the_engines_and_a_load_follows_it(
    make: Any, bert: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manager, loads = make(spec(bert))
    result = await manager.tune("m")
    assert result["measured"] is True and result["ranking"] == ["torch", "openvino", "onnxruntime"]
    assert sorted(loads) == ["onnxruntime", "openvino", "torch"]  # each candidate loaded once
    assert manager.counters["engine_measurements"] == 1
    figures = {f["engine"]: f for f in result["figures"]}
    assert set(figures["torch"]["rates"]) == {"batch 1", f"batch {manager.settings.encoder_max_batch}"}
    assert figures["torch"]["score"] > figures["openvino"]["score"] > figures["onnxruntime"]["score"]
    stored = json.loads((tmp_path / "state" / engine_choice.FILE_NAME).read_text())
    assert [r["ranking"] for r in stored.values()] == [["torch", "openvino", "onnxruntime"]]
    assert manager.loading() == []  # the measuring phase is over

    with caplog.at_level(logging.WARNING, logger="hfd.daemon.models.engine_choice"):
        lm = await manager.load("m")
    assert lm.engine == "torch"  # the static order would try onnxruntime first
    assert lm.engine_reason.startswith("measured on this machine: torch ")
    assert "openvino" in lm.engine_reason and "texts/s" in lm.engine_reason
    assert lm.info(manager.now())["engine_reason"] == lm.engine_reason
    assert any(
        r.getMessage() == "measured engine order differs from the static order" for r in caplog.records
    )


async def test_a_restart_reuses_the_ranking_and_a_first_load_never_measures(make: Any, bert: Path) -> None:
    first, _ = make(spec(bert))
    lm = await first.load("m")  # nothing measured yet: the static order, and said so
    assert lm.engine == "onnxruntime" and lm.engine_reason.startswith("static order: ")
    assert first.counters["engine_measurements"] == 0  # not in the request path
    await first.tune("m")
    await first.aclose()

    again, loads = make(spec(bert))
    result = await again.measure("m", bert)  # as a pull or preload after the restart
    assert result is not None and result["measured"] is False and result["cached"] is True
    assert again.counters["engine_measurements"] == 0 and loads == []
    assert (await again.load("m")).engine == "torch"


async def test_a_changed_key_measures_again(make: Any, bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager, _ = make(spec(bert))
    await manager.tune("m")
    other_threads, _ = make(ModelSpec(ref=str(bert), name="m", threads=2))
    assert (await other_threads.measure("m", bert) or {})["measured"] is True  # threads are in the key
    monkeypatch.setattr(engine_choice, "machine", lambda: INTEL)  # another CPU sharing the state dir
    other_cpu, _ = make(spec(bert))
    assert (await other_cpu.load("m")).engine_reason.startswith("static order: ")
    assert (await other_cpu.measure("m", bert) or {})["measured"] is True


async def test_a_pin_and_a_crash_record_win_over_the_ranking(make: Any, bert: Path) -> None:
    manager, _ = make(spec(bert))
    await manager.tune("m")
    pinned, _ = make(spec(bert, engine="onnxruntime"))
    lm = await pinned.load("m")
    assert lm.engine == "onnxruntime" and lm.engine_reason.startswith("pinned engine")
    assert (await pinned.tune("m"))["measured"] is False  # nothing to choose

    crashed, _ = make(spec(bert))
    torch_key = crashed.loader._record_key(crashed.spec("m"), bert, "embed", "torch", "cpu")
    crashed.engine_memory.remember(torch_key, model="m", engine="torch", device="cpu", reason="SIGILL")
    lm = await crashed.load("m")
    assert lm.engine == "openvino"  # the measured second, not the static first
    assert lm.engine_reason.startswith("measured on this machine")


async def test_generation_is_measured_in_tokens_per_second(make: Any, tmp_path: Path) -> None:
    llama = fake_model(tmp_path / "models", "llama")
    manager, _ = make(spec(llama), latency={"torch": 1.0, "openvino": 20.0, "onnxruntime": 0.0})
    result = await manager.tune("m")
    assert result["ranking"] == ["torch", "openvino"] and result["unit"] == "tok/s"
    assert set(result["figures"][0]["rates"]) == {"1 stream", f"{engine_choice.GEN_STREAMS} streams"}
    assert (await manager.load("m")).engine == "torch"  # the static order: openvino first


async def test_a_measurements_loads_leave_the_spare_engine_process_to_the_real_load(
    make: Any, tmp_path: Path
) -> None:
    kept: list[bool] = []
    manager, loads = make(spec(fake_model(tmp_path / "models", "llama")), kept=kept)
    await manager.tune("m")
    await manager.load("m")
    assert len(kept) == len(loads) == 3  # two measured candidates, then the model's own load
    assert kept == [True, True, False]


async def test_the_spare_engine_process_is_kept_for_the_whole_measurement(
    make: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not only during each candidate's load: its workload too may outlast the spare's idle time.
    keepers_while_timed: list[int] = []
    timed = engine_choice.generation_rates

    def recording(model: Any, streams: int) -> dict[str, float]:
        keepers_while_timed.append(openvino_process._keepers)
        return timed(model, streams)

    monkeypatch.setattr(engine_choice, "generation_rates", recording)
    manager, _ = make(spec(fake_model(tmp_path / "models", "llama")))
    await manager.tune("m")
    assert len(keepers_while_timed) == 2 and all(n > 0 for n in keepers_while_timed)
    assert openvino_process._keepers == 0  # the spare's idle time runs again afterwards


async def test_measure_engines_off_keeps_the_static_order(make: Any, bert: Path) -> None:
    manager, _ = make(spec(bert))
    await manager.tune("m")
    off, loads = make(spec(bert), measure_engines=False)
    with pytest.raises(InvalidRequest, match="measure_engines"):
        await off.tune("m")
    assert await off.measure("m", bert) is None and loads == []
    lm = await off.load("m")
    assert lm.engine == "onnxruntime" and lm.engine_reason.startswith("static order: ")


async def test_ps_and_doctor_say_why(make: Any, bert: Path) -> None:
    manager, _ = make(spec(bert))
    await manager.tune("m")
    row = RunningModel.from_dict((await manager.load("m")).info(manager.now()))
    assert row.engine_reason is not None
    assert f"m: on torch, {row.engine_reason}" in ps_table([row]).splitlines()
    [measured] = measured_rows(manager.settings)
    assert measured["model"] == "m" and measured["ranking"][0] == "torch"
    assert measured["why"].startswith("measured on this machine: torch ")


def test_a_near_tie_keeps_the_static_first_engine_first() -> None:
    def figures(**scores: float | None) -> list[dict[str, Any]]:
        return [{"engine": e, "score": s} for e, s in scores.items()]

    def order(ranked: list[dict[str, Any]]) -> list[str]:
        return [f["engine"] for f in ranked]

    near = figures(onnxruntime=95.0, openvino=100.0, torch=50.0)  # within the margin: noise
    assert order(engine_choice.rank(near, "onnxruntime")) == ["onnxruntime", "openvino", "torch"]
    clear = figures(onnxruntime=80.0, openvino=100.0, torch=50.0)
    assert order(engine_choice.rank(clear, "onnxruntime")) == ["openvino", "onnxruntime", "torch"]
    failed = figures(onnxruntime=None, openvino=10.0, torch=50.0)  # a failed engine goes last
    assert order(engine_choice.rank(failed, "onnxruntime")) == ["torch", "openvino", "onnxruntime"]


async def test_preload_measures_first_and_loads_the_winner(make: Any, bert: Path) -> None:
    manager, _ = make(spec(bert, preload=True))
    await manager.preload()
    assert manager.counters["engine_measurements"] == 1
    assert [lm.engine for lm in manager.loaded()] == ["torch"]
    await manager.aclose()
    restarted, _ = make(spec(bert, preload=True))
    await restarted.preload()  # the stored ranking: nothing measured again
    assert restarted.counters["engine_measurements"] == 0
    assert [lm.engine for lm in restarted.loaded()] == ["torch"]


def torch_fails(manager: ModelManager, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    """The torch candidate's load raises ``exc``; the other engines load as before."""
    load = manager.loader._load_engine

    def failing(engine: str, task: Task, opts: LoadOptions) -> Any:
        if engine == "torch":
            raise exc
        return load(engine, task, opts)

    monkeypatch.setattr(manager.loader, "_load_engine", failing)


@pytest.mark.parametrize("where", ["make_room", "load"])
async def test_a_passing_failure_is_not_stored_and_measures_again(
    make: Any, bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    manager, _ = make(spec(bert))
    if where == "make_room":  # no memory for the candidate at that moment
        make_room = manager.loader.residency.make_room

        async def no_room_for_torch(name: str, *args: Any) -> None:
            if name.endswith("(measuring torch)"):
                raise InsufficientMemory("not enough memory now")
            await make_room(name, *args)

        monkeypatch.setattr(manager.loader.residency, "make_room", no_room_for_torch)
    else:  # the engine ran out of memory in its load
        torch_fails(manager, monkeypatch, MemoryError("cannot allocate"))
    result = await manager.measure("m", bert)
    assert result is not None and result["measured"] is True and result["stored"] is False
    assert result["ranking"] == ["openvino", "onnxruntime"]
    assert not (tmp_path / "state" / engine_choice.FILE_NAME).exists()
    monkeypatch.undo()
    again = await manager.measure("m", bert)  # as the next pull or preload: measured, not cached
    assert again is not None and again["measured"] is True and again["stored"] is True
    assert again["ranking"] == ["torch", "openvino", "onnxruntime"]


async def test_an_engines_own_failure_is_stored(
    make: Any, bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, _ = make(spec(bert))
    torch_fails(manager, monkeypatch, RuntimeError("unsupported operator"))
    result = await manager.measure("m", bert)
    assert result is not None and result["stored"] is True
    assert result["ranking"] == ["openvino", "onnxruntime"]
    assert (await manager.measure("m", bert) or {}).get("cached") is True  # the verdict stands


def test_passing_errors() -> None:
    assert engine_choice.passing(MemoryError()) and engine_choice.passing(InsufficientMemory("x"))
    assert engine_choice.passing(ModelUnavailable("x", retry_after=1.0))
    assert not engine_choice.passing(ModelUnavailable("x")) and not engine_choice.passing(RuntimeError("x"))


async def test_two_entries_on_one_snapshot_are_ranked_apart(make: Any, bert: Path) -> None:
    plain = spec(bert)
    f32 = ModelSpec(ref=str(bert), name="m32", threads=1, options={"dtype": "float32"})
    manager, loads = make(plain, f32)
    assert (await manager.tune("m"))["measured"] is True
    loads.clear()
    result = await manager.measure("m32", bert)  # another dtype: its own ranking, not m's
    assert result is not None and result["measured"] is True and result.get("cached") is None
    assert sorted(loads) == ["onnxruntime", "openvino", "torch"]
    keys = {engine_choice.plan(manager.loader, s, bert, "embed", manager.candidates("embed", s)).key  # type: ignore[union-attr]
            for s in (plain, f32, dataclasses.replace(plain, weight_format="int8"))}  # fmt: skip
    assert len(keys) == 3


async def test_a_real_loads_ps_row_survives_a_measurement(
    make: Any, bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, _ = make(spec(bert))
    phases = manager.loader.phases
    phases.enter("m", "resolving", task="embed")  # a real load of the model, in progress meanwhile
    seen: list[set[str]] = []
    load = manager.loader._load_engine

    def watching(engine: str, task: Task, opts: LoadOptions) -> Any:
        seen.append({r["name"] for r in phases.rows()})
        return load(engine, task, opts)

    monkeypatch.setattr(manager.loader, "_load_engine", watching)
    await manager.tune("m")
    assert {"m", "m (measuring torch)"} in seen  # each measured engine has its own row
    assert phases.state("m") == "resolving"  # neither overwritten nor removed
    assert [r["name"] for r in manager.loading()] == ["m"]  # the measurement's rows are gone
