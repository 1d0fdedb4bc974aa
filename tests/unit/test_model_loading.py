"""The manager's engine loader and hardware detector are injectable: with a fake detector the
policy orders engines for a box the test describes, and with a fake loader a failing engine
falls back to the next one, without any engine library."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from hfd.backends.base import EncoderModel, LoadOptions, Task, TokenizedBatch
from hfd.backends.hardware import CpuInfo, Device, EngineProbe, HardwareReport, MemoryInfo
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.scheduler.base import EncoderStats
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytestmark = pytest.mark.anyio


def x86_box() -> HardwareReport:
    """An x86 CPU with torch and OpenVINO (no ONNX Runtime): OpenVINO first, then torch."""
    cpu = CpuInfo("AuthenticAMD", "test CPU", "x86_64", 2, 2, 2, ("avx2",))
    return HardwareReport(
        system="Linux",
        python="3",
        cpu=cpu,
        memory=MemoryInfo(total_bytes=8 << 30, available_bytes=8 << 30),
        torch=EngineProbe("torch", True, "0", devices=(Device("torch", "cpu", "cpu", "CPU"),)),
        openvino=EngineProbe("openvino", True, "0", devices=(Device("openvino", "CPU", "cpu", "CPU"),)),
        onnxruntime=EngineProbe("onnxruntime", False, reason="not installed here"),
    )


class FakeEncoder:
    name = "fake"
    device = "cpu"
    max_length = 16
    dimensions = 4

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        return TokenizedBatch(ids=[[1] * min(len(t), self.max_length) for t in texts])

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        return np.ones((len(batch.ids), self.dimensions), dtype=np.float32)

    def memory_bytes(self) -> int:
        return 1024

    def close(self) -> None:
        pass


class Loads:
    """An engine loader where OpenVINO fails and any other engine gives a fake encoder."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def __call__(self, engine: str, task: Task, opts: LoadOptions) -> EncoderModel:
        self.tried.append(engine)
        if engine == "openvino":
            raise RuntimeError("cannot compile here")
        return FakeEncoder()


def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "enc"
    path.mkdir()
    (path / "config.json").write_text('{"architectures": ["BertModel"], "model_type": "bert"}')
    return path


async def test_a_fake_detector_orders_the_engines_and_a_failing_engine_falls_back(tmp_path: Path) -> None:
    base = load_settings(environ={"HFD_STATE_DIR": str(tmp_path / "state"), "HFD_CACHE_DIR": str(tmp_path)})
    spec = ModelSpec(ref=str(model_dir(tmp_path)), name="enc", threads=1)
    loads = Loads()
    manager = ModelManager(
        with_overrides(base, models=(spec,)),
        budgets=Budgets({RAM: 1 << 40}),
        load_engine=loads,
        detect_hardware=x86_box,
    )
    try:
        assert [c[0] for c in manager.candidates("embed", spec)] == ["openvino", "torch"]
        async with manager.acquire("enc") as lm:
            vectors = (await lm.encoder().embed(["hello", "world"])).vectors
        assert vectors.shape == (2, 4)
        assert loads.tried == ["openvino", "torch"]
        info = lm.info(manager.now())
        assert (info["engine"], info["preferred_engine"]) == ("torch", "openvino")
        assert "cannot compile here" in info["fallback_reason"]
        assert manager.breakers.get("enc", "openvino").failures == 1
        stats = lm.scheduler.stats()
        assert isinstance(stats, EncoderStats) and stats.inputs == 2
        assert info["scheduler"] == stats.to_dict() and info["scheduler"]["kind"] == "encoder"
    finally:
        await manager.aclose()
