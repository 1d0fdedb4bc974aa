"""The engines' CPU thread pools as hfd sets them up: ONNX Runtime not spinning, OpenVINO's
and torch's defaults kept; what the option builders pass on; and ``hfd doctor``'s line for each
engine's thread count and each option, with why."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hfd.backends import cpu_pools
from hfd.backends.base import LoadOptions
from hfd.backends.hardware import CpuInfo, detect, hardware_json
from hfd.daemon.cli.doctor import add_thread_choices, format_report
from hfd.daemon.settings import Settings


def test_each_option_has_a_reason() -> None:
    ort = cpu_pools.options("onnxruntime")
    assert [(o.name, o.value) for o in ort] == [("session.intra_op.allow_spinning", "0")]
    assert [o.name for o in cpu_pools.options("openvino")] == ["ENABLE_CPU_PINNING"]
    assert [o.name for o in cpu_pools.options("torch")] == ["OMP_WAIT_POLICY"]
    assert all(o.why for e in ("onnxruntime", "openvino", "torch") for o in cpu_pools.options(e))
    assert cpu_pools.options("fake") == []


def test_openvino_keeps_its_own_pinning(tmp_path: Path) -> None:
    from hfd.backends import openvino_backend

    opts = LoadOptions(path=tmp_path, task="generate", threads=2)
    props = openvino_backend._compile_properties(opts, "CPU")
    assert props["INFERENCE_NUM_THREADS"] == 2
    assert "ENABLE_CPU_PINNING" not in props


def test_onnxruntime_sessions_on_the_cpu_do_not_spin(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="ONNX Runtime builds the session")
    pytest.importorskip("onnx", reason="the test graph is built with onnx")
    import onnx
    from onnx import TensorProto, helper

    from hfd.backends.onnx_backend import OnnxEncoder

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    seen: dict[str, Any] = {}

    class Recorded(OnnxEncoder):
        def _ports(self, graph: Path, inputs: list[str], outputs: list[str]) -> None:
            seen["spinning"] = self._session.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning"
            )
            seen["threads"] = self._session.get_session_options().intra_op_num_threads

    head: Any = SimpleNamespace(max_length=8, dimensions=1)  # the session is what is checked
    Recorded(path, head, "cpu", ["CPUExecutionProvider"], 2)
    assert seen == {"spinning": "0", "threads": 2}


def test_every_onnx_runtime_serving_session_uses_one_rule() -> None:
    pytest.importorskip("onnxruntime", reason="ONNX Runtime builds the options")
    from hfd.backends.onnx_backend import session_options

    cpu = session_options("cpu", 2)
    assert cpu.intra_op_num_threads == 2 and cpu.inter_op_num_threads == 1
    assert cpu.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # Off the CPU the pool is the provider's: nothing set (ONNX Runtime raises for an unset entry).
    with pytest.raises(Exception, match="allow_spinning"):
        session_options("cuda:0", 0).get_session_config_entry("session.intra_op.allow_spinning")


def test_doctor_shows_each_engines_threads_and_options_with_why(tmp_path: Path) -> None:
    report = detect()
    report = dataclasses.replace(report, cpu=CpuInfo("AMD", "EPYC", "x86_64", 2, 2, 2, ("avx2",)))
    data = hardware_json(report)
    # The engines' CPU rows as the report has them where each is installed (the unit tier runs
    # with the engine libraries hidden, where the report has none): the rule needs no engine.
    defaults = data.setdefault("defaults", {})
    for engine in ("torch", "onnxruntime", "openvino"):
        defaults.setdefault(engine, {"device": "cpu", "precision": "float32"})
    settings = Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    add_thread_choices(data, settings, report)
    text = format_report(report, data)
    section = text.split("Engine threads and thread-pool options on the CPU (why)\n", 1)[1].splitlines()
    for engine, d in data["defaults"].items():
        head = [engine, "threads", str(d["threads"])]
        assert any(line.split()[:3] == head and d["threads_why"] in line for line in section)
        for option in cpu_pools.options(engine):
            assert any(f"{option.name}={option.value}" in line and option.why in line for line in section)
    assert any("session.intra_op.allow_spinning=0" in line for line in section)
