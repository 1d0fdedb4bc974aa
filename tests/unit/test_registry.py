"""The engine records: each names a factory and a probe that exist, and the old names of the
moved probes still answer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from hfd.backends import hardware, registry
from hfd.backends.base import LoadOptions


@pytest.mark.parametrize("record", registry.RECORDS, ids=lambda r: r.name)
def test_a_record_names_a_factory_module_and_a_probe(record: registry.EngineRecord) -> None:
    module, _, attr = record.factory.partition(":")
    assert attr and importlib.util.find_spec(module) is not None  # found, not imported
    probe = record.run_probe()
    assert probe.name == record.name
    assert record.tasks <= {"generate", "embed"}
    assert hardware.detect().engine(record.name) == probe


def test_moved_probes_answer_under_their_old_names() -> None:
    from hfd.backends import onnx_probe, openvino_probe, torch_probe

    assert hardware.probe_torch is torch_probe.probe_torch
    assert hardware.probe_openvino is openvino_probe.probe_openvino
    assert hardware.probe_onnxruntime is onnx_probe.probe_onnxruntime
    with pytest.raises(AttributeError):
        hardware.probe_nothing  # noqa: B018


def test_own_process_and_load_dtype_come_from_the_records(tmp_path: Path) -> None:
    gen = LoadOptions(path=tmp_path, task="generate")
    assert registry.own_process("openvino", "generate", gen)
    off = LoadOptions(path=tmp_path, task="generate", extra={"pipeline_process": "false"})
    assert not registry.own_process("openvino", "generate", off)
    assert not registry.own_process("torch", "generate", gen) and not registry.own_process(
        "nope", "embed", gen
    )
    assert registry.load_dtype("torch", gen) == "float32"
    assert (
        registry.load_dtype("torch", LoadOptions(path=tmp_path, task="embed", device="cuda:0")) == "float16"
    )
    assert registry.load_dtype("openvino", gen) == "fp32"
    assert registry.load_dtype("onnxruntime", gen) is None
    with pytest.raises(ValueError, match="known: fake, onnxruntime, openvino, torch"):
        registry.record("tpu")


def test_ps_precision_falls_back_to_the_records_load_dtype(tmp_path: Path) -> None:
    from hfd.daemon.models.engine_info import engine_details

    class Plain:  # a loaded model that says nothing about its precision
        pass

    cpu = LoadOptions(path=tmp_path, task="embed")
    gpu = LoadOptions(path=tmp_path, task="embed", device="cuda:0")
    assert engine_details(Plain(), "torch", cpu)["precision"] == "f32"
    assert engine_details(Plain(), "torch", gpu)["weight_format"] == "f16"
    assert engine_details(Plain(), "fake", cpu)["precision"] is None
    assert (
        engine_details(Plain(), "onnxruntime", LoadOptions(path=tmp_path, task="embed", dtype="float16"))[
            "precision"
        ]
        == "f16"
    )
