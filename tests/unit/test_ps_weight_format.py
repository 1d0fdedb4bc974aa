"""`hfd ps`'s WEIGHTS column says what the engine holds, not what the options asked for: only
the OpenVINO engine reads ``weight_format`` (fp32, fp16, int8, int4); torch and ONNX Runtime
hold their weights in the dtype they compute in (or say nothing), never the asked format."""

from __future__ import annotations

from pathlib import Path

from hfd.backends.base import LoadOptions
from hfd.daemon.models.engine_info import engine_details


class Plain:  # a loaded model that says nothing about its weights
    pass


class Reporting:  # an engine's model that knows (OpenVINO's generator and encoders)
    weight_format = "int4"
    precision = "f32"


def test_the_option_counts_only_where_the_engine_reads_it(tmp_path: Path) -> None:
    asked = LoadOptions(path=tmp_path, task="generate", weight_format="int4")
    assert engine_details(Plain(), "torch", asked)["weight_format"] == "f32"
    # ONNX Runtime ignores the option (and logs so); a model that does not say is shown unknown.
    assert engine_details(Plain(), "onnxruntime", asked)["weight_format"] is None
    assert engine_details(Plain(), "openvino", asked)["weight_format"] == "int4"
    row = engine_details(Reporting(), "openvino", LoadOptions(path=tmp_path, task="generate"))
    assert (row["weight_format"], row["precision"]) == ("int4", "f32")
