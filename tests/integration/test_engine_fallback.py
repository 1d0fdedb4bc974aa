"""An engine that crashes natively while it is proven on a model (warm-up in the OpenVINO engine
process, the compile probe of an OpenVINO encoder) fails that load only: the manager falls back
to the next engine, says which engine it preferred and why it is not serving, remembers the
failure in the state dir, and the next load skips the engine at once.

The crash is real (the process dies of SIGFPE, as OpenVINO does on some CPUs); it is injected
with the test-only model option ``test_fault``, which the engine honours only under
``HFD_TEST_FAULTS=1``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.models import tiny_bert, tiny_llama

from hfd.backends import hardware
from hfd.backends.hardware import EngineProbe, HardwareReport
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.engine_memory import FILE_NAME
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
pytest.importorskip("optimum.intel", reason="optimum-intel is not installed (needed to export)")
pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def openvino_first() -> HardwareReport:
    """This box seen as an x86 CPU without ONNX Runtime: the policy's order is then OpenVINO,
    then torch, for generation and for encoders alike."""
    report = hardware.detect()
    return dataclasses.replace(
        report,
        cpu=dataclasses.replace(report.cpu, arch="x86_64"),
        onnxruntime=EngineProbe(name="onnxruntime", installed=False, reason="left out by the test"),
    )


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fallback-cache")  # exports shared by the tests here


@pytest.fixture
async def manager(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ModelManager]:
    monkeypatch.setenv("HFD_TEST_FAULTS", "1")
    base = load_settings(environ={"HFD_CACHE_DIR": str(cache_dir), "HFD_STATE_DIR": str(tmp_path / "state")})
    specs = (
        ModelSpec(
            ref=str(tiny_llama()), name="chat", threads=1, max_running=4, options={"test_fault": "warmup"}
        ),
        ModelSpec(ref=str(tiny_bert()), name="enc", threads=1, options={"test_fault": "probe"}),
    )
    m = ModelManager(
        with_overrides(base, models=specs), budgets=Budgets({RAM: 1 << 40}), detect_hardware=openvino_first
    )
    yield m
    await m.aclose()


async def test_a_crash_in_warm_up_falls_back_to_torch_and_is_remembered(manager: ModelManager) -> None:
    lm = await manager.load("chat")
    info = lm.info(manager.now())
    assert (info["engine"], info["preferred_engine"]) == ("torch", "openvino")
    assert "died while loading and warming up" in info["fallback_reason"]
    assert "SIGFPE" in info["fallback_reason"]
    assert info["precision"] == "f32" and info["weight_format"] == "f32"
    # No breaker opened: the crash says nothing about whether another engine can serve.
    assert info["breaker"]["state"] == "closed"
    assert manager.breakers.get("chat", "openvino").failures == 0

    records = anyio.Path(manager.settings.state_dir, FILE_NAME)
    [record] = json.loads(await records.read_text()).values()
    assert (record["model"], record["engine"], record["threads"]) == ("chat", "openvino", 1)

    # The next load (even in a new daemon reading the same state dir) skips openvino at once.
    await manager.unload("chat")
    again = ModelManager(manager.settings, budgets=Budgets({RAM: 1 << 40}), detect_hardware=openvino_first)
    try:
        with anyio.fail_after(120):
            lm2 = await again.load("chat")
        info2 = lm2.info(again.now())
        assert (info2["engine"], info2["preferred_engine"]) == ("torch", "openvino")
        assert "(remembered)" in info2["fallback_reason"]
        assert again.counters["load_failures"] == 0  # openvino was not tried
    finally:
        await again.aclose()


async def test_an_encoder_compile_crash_happens_in_a_probe_not_in_the_daemon(manager: ModelManager) -> None:
    lm = await manager.load("enc")  # the daemon's own process survives the SIGFPE
    info: dict[str, Any] = lm.info(manager.now())
    assert (info["engine"], info["preferred_engine"]) == ("torch", "openvino")
    assert "OpenVINO crashed compiling" in info["fallback_reason"]
    vectors = lm.model.embed(lm.model.tokenize(["still serving"]))
    assert vectors.shape[0] == 1
