"""Engine failure records: keyed by model, engine, device, machine, threads and precision, kept
in the state dir across restarts; an engine process that keeps dying at its first requests is
recorded like one that crashed at load."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hfd.daemon.models import engine_memory
from hfd.daemon.models.engine_memory import EngineMemory, record_key
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.scheduler.base import GenerationStats
from hfd.daemon.settings import load_settings

AMD = {"cpu": "AMD EPYC", "arch": "x86_64", "features": ["avx2", "fma"]}
INTEL = {"cpu": "Intel Xeon", "arch": "x86_64", "features": ["amx_bf16", "avx2", "avx512_bf16"]}


def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "m"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def test_the_key_changes_with_everything_the_failure_depends_on(tmp_path: Path) -> None:
    path = model_dir(tmp_path)
    base = record_key(path, "openvino", "cpu", 1, None, INTEL)
    assert base == record_key(path, "openvino", "CPU", 1, None, INTEL)
    others = {
        record_key(path, "openvino", "cpu", 1, None, AMD),  # another machine
        record_key(path, "openvino", "cpu", 2, None, INTEL),  # other threads
        record_key(path, "openvino", "cpu", 1, "float32", INTEL),  # another precision
        record_key(path, "torch", "cpu", 1, None, INTEL),  # another engine
    }
    assert base not in others and len(others) == 4
    (path / "model.safetensors").write_bytes(b"new weights")
    assert record_key(path, "openvino", "cpu", 1, None, INTEL) != base  # other files


def test_records_survive_a_restart_and_a_broken_file_starts_afresh(tmp_path: Path) -> None:
    memory = EngineMemory(tmp_path)
    memory.remember("k", model="chat", engine="openvino", device="cpu", reason="SIGFPE")
    again = EngineMemory(tmp_path)
    record = again.get("k")
    assert record is not None and (record["engine"], record["reason"]) == ("openvino", "SIGFPE")
    assert {"cpu", "features"} <= set(record)  # the machine it holds for
    again.forget("k")
    assert EngineMemory(tmp_path).get("k") is None
    (tmp_path / engine_memory.FILE_NAME).write_text("{not json")
    assert EngineMemory(tmp_path).get("k") is None


def dead_model(finished: int, key: str = "key") -> Any:
    stats = GenerationStats(
        active=0, max_queue=1, requests_rejected=0, errors=0, waiting=0, running=0, max_running=1,
        steps=0, tokens_generated=0, requests_finished=finished, mean_batch_size=0.0, mean_step_ms=0.0,
    )  # fmt: skip
    return SimpleNamespace(
        record_key=key,
        name="chat",
        engine="openvino",
        device="cpu",
        scheduler=SimpleNamespace(stats=lambda: stats),
    )


def test_an_engine_process_dying_twice_at_its_first_requests_is_remembered(tmp_path: Path) -> None:
    settings = load_settings(environ={"HFD_STATE_DIR": str(tmp_path)})
    manager = ModelManager(settings)
    manager.loader.engine_died(dead_model(finished=0))
    assert manager.engine_memory.get("key") is None  # once may be chance (the OOM killer)
    manager.loader.engine_died(dead_model(finished=1))
    record = manager.engine_memory.get("key")
    assert record is not None and "died 2 times" in record["reason"]
    assert json.loads((tmp_path / engine_memory.FILE_NAME).read_text())["key"]["engine"] == "openvino"


def test_an_engine_process_that_served_for_a_while_is_not_blamed(tmp_path: Path) -> None:
    settings = load_settings(environ={"HFD_STATE_DIR": str(tmp_path)})
    manager = ModelManager(settings)
    manager.loader.engine_died(dead_model(finished=0))
    manager.loader.engine_died(dead_model(finished=engine_memory.EARLY_REQUESTS))  # a long life resets
    manager.loader.engine_died(dead_model(finished=0))
    assert manager.engine_memory.get("key") is None


def test_an_engine_crash_is_a_model_unavailable_error_with_its_exit_code() -> None:
    from hfd.backends.proving import EngineCrashed, exit_description

    exc = EngineCrashed("the engine process died (killed by SIGFPE, code -8)", code=-8)
    assert exc.to_dict()["code"] == "model_unavailable" and exc.status == 503
    assert exc.details == {"exit_code": -8} and exc.exit_code == -8
    assert exit_description(-8) == "killed by SIGFPE, code -8"
    assert exit_description(3) == "code 3"
