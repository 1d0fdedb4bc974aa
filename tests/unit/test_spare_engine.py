"""The spare OpenVINO engine process: started only when a model that is not loaded yet will
generate on OpenVINO, left alone by a load of another engine process, closed at shutdown, and
never leaked by a load that fails before its first request. The spare here is a real child
process (``python -m hfd.backends.openvino_process``; it waits for its parent without
openvino_genai too)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.store_env import store_settings

from hfd.backends import openvino_process, preload
from hfd.backends.openvino_process import PipelineProcess
from hfd.daemon.models import exporting
from hfd.daemon.settings import ModelSpec
from hfd.daemon.store import ModelStore

VISION_MODULE = "hfd.backends.vlm_openvino_process"


@pytest.fixture
def spare() -> Iterator[int]:
    """A started spare (its pid); closed after the test whatever became of it."""
    pid = openvino_process.start_spare(idle_s=60)
    yield pid
    openvino_process.close_spare()


def _running(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps it if it exited unwaited
        os.kill(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _end(taken: tuple[subprocess.Popen[bytes], int, int]) -> None:
    """End a spare a test took as a load would: its pipes closed, the child exits."""
    proc, tx, rx = taken
    for fd in (tx, rx):
        os.close(fd)
    proc.wait(10)


def test_a_load_of_another_module_leaves_the_spare_for_a_generation_load(spare: int) -> None:
    assert openvino_process._take_spare(VISION_MODULE) is None
    assert _running(spare)  # not closed by the vision chat load
    taken = openvino_process._take_spare(PipelineProcess.module)
    assert taken is not None and taken[0].pid == spare
    _end(taken)


def test_an_engine_measurements_loads_leave_the_spare_for_the_models_own_load(spare: int) -> None:
    with openvino_process.spare_kept():  # what engine_choice's measurement loads run in
        assert openvino_process._take_spare(PipelineProcess.module) is None
    assert _running(spare)
    taken = openvino_process._take_spare(PipelineProcess.module)  # the model's own load, after
    assert taken is not None and taken[0].pid == spare
    _end(taken)


def test_the_spare_outlives_its_idle_time_while_a_measurement_keeps_it() -> None:
    idle = 0.3
    pid = openvino_process.start_spare(idle_s=idle)
    try:
        with openvino_process.spare_kept():  # a measurement longer than the spare's idle time
            time.sleep(3 * idle)
            assert openvino_process._spare is not None and _running(pid)
        deadline = time.monotonic() + 10 * idle  # its idle time runs again once the block ends
        while openvino_process._spare is not None and time.monotonic() < deadline:
            time.sleep(idle / 10)
        assert openvino_process._spare is None
    finally:
        openvino_process.close_spare()
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


def test_shutdown_closes_a_spare_no_load_took(spare: int) -> None:
    preload.close_spare()  # what the daemon's shutdown calls
    assert openvino_process._spare is None
    assert not _running(spare)


def test_a_load_failing_before_its_first_request_ends_the_spare_it_took(
    spare: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_pipe() -> tuple[int, int]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(openvino_process.os, "pipe", no_pipe)
    with pytest.raises(OSError, match="Too many open files"):
        PipelineProcess({})
    monkeypatch.undo()
    assert openvino_process._spare is None  # it was taken
    assert not _running(spare)


# -- whether one is started ---------------------------------------------------------------------


def _model(root: Path, name: str, architecture: str) -> str:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"architectures": [architecture], "model_type": "x"}))
    return str(folder)


def _spare_wanted(tmp_path: Path, models: list[ModelSpec], loaded: list[str], **settings: object) -> bool:
    """What ``start_importing`` tells the background imports about a spare."""
    asked: list[Callable[[], bool] | None] = []
    s = store_settings(tmp_path, models=tuple(models), **settings)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preload, "start", lambda spare_generator=None: asked.append(spare_generator))
        exporting.start_importing(s, ModelStore(s), loaded)
    wanted = asked[0]
    return wanted is not None and wanted()


def test_a_spare_only_for_a_generation_model_not_loaded_yet(tmp_path: Path) -> None:
    chat = ModelSpec(ref=_model(tmp_path, "chat", "LlamaForCausalLM"), name="chat")
    embed = ModelSpec(ref=_model(tmp_path, "embed", "BertModel"), name="embed")
    assert _spare_wanted(tmp_path, [chat, embed], loaded=[]) is True
    assert _spare_wanted(tmp_path, [chat, embed], loaded=["chat"]) is False  # preloaded already
    assert _spare_wanted(tmp_path, [embed], loaded=[]) is False  # no task pinned, none generates
    absent = ModelSpec(ref=str(tmp_path / "absent"), name="absent")
    assert _spare_wanted(tmp_path, [absent], loaded=[]) is False  # not stored: its task is unknown
    assert (
        _spare_wanted(tmp_path, [ModelSpec(ref=str(tmp_path / "absent"), name="g", task="generate")], [])
        is True
    )
    torch_chat = ModelSpec(ref=chat.ref, name="chat", engine="torch")
    assert _spare_wanted(tmp_path, [torch_chat], loaded=[]) is False
    assert _spare_wanted(tmp_path, [chat], loaded=[], engine="torch") is False
