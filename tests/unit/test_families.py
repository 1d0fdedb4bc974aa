"""The table of model families an engine cannot serve (``backends/families.py``): a version cap
applies only above its version, and a refusal says why before any work is done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hfd.backends import families
from hfd.client.errors import ModelUnavailable


def model_dir(tmp_path: Path, model_type: str) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    return tmp_path


def test_a_version_cap_applies_only_above_its_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(families, "_transformers_version", lambda: "5.5.4")
    reason = families.gap("openvino", "generate", "gemma")
    assert reason == "optimum-intel 2.2.0 exports Gemma only with transformers <= 5.0"
    monkeypatch.setattr(families, "_transformers_version", lambda: "4.57.6")
    assert families.gap("openvino", "generate", "gemma") is None  # an older install still exports it
    assert families.gap("openvino", "generate", "jamba") is not None  # no exporter at any version


def test_families_and_engines_not_in_the_table_are_served() -> None:
    assert families.gap("openvino", "generate", "llama") is None
    assert families.gap("torch", "generate", "mamba") is None
    assert families.gap("openvino", "generate", None) is None
    assert families.gap("onnxruntime", "embed", "bert") is None


def test_check_refuses_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(families, "_transformers_version", lambda: "5.5.4")
    path = model_dir(tmp_path, "mamba")
    assert families.model_type(path) == "mamba"
    with pytest.raises(ModelUnavailable) as info:
        families.check("openvino", "generate", path)
    assert "transformers <= 5.3.0" in info.value.message
    assert info.value.details == {
        "engine": "openvino",
        "model_type": "mamba",
        "reason": "optimum-intel 2.2.0 exports Mamba only with transformers <= 5.3.0",
    }
    families.check("torch", "generate", path)  # torch serves it


def test_an_unreadable_config_has_no_model_type(tmp_path: Path) -> None:
    assert families.model_type(tmp_path) is None
    (tmp_path / "config.json").write_text("not json")
    assert families.model_type(tmp_path) is None
