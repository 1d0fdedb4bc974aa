"""``hfd doctor`` lists the engines from the registry's records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hfd.backends import registry
from hfd.backends.hardware import detect, hardware_json
from hfd.daemon.cli.doctor import format_report, model_rows


def _engine_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Engines") + 2  # past the header row
    return [line.split()[0] for line in lines[start:] if line.startswith("  ") and line.split()][:10]


def test_every_offered_engine_has_a_row_and_the_fake_one_only_when_pinned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(registry.FAKE_ENGINE_ENV, raising=False)
    report = detect()
    text = format_report(report, hardware_json(report))
    rows = _engine_rows(text)
    offered = [r.name for r in registry.RECORDS if r.offered]
    assert rows[: len(offered)] == offered and "fake" not in rows

    pinned = format_report(report, hardware_json(report, pinned_engine="fake"), pinned_engine="fake")
    assert "fake" in _engine_rows(pinned)
    assert "1. fake on cpu: pinned engine" in pinned


def test_the_json_report_has_every_registered_engine() -> None:
    data = json.loads(json.dumps(hardware_json(detect())))
    for name in registry.names():
        assert data[name]["name"] == name
    assert set(data["defaults"]) <= set(registry.names())


def test_models_show_their_task_and_the_engine_serving_or_to_try(tmp_path: Path) -> None:
    from hfd.client.types import RunningModel
    from hfd.daemon.settings import ModelSpec, Settings

    reranker = tmp_path / "reranker"
    reranker.mkdir()
    (reranker / "config.json").write_text(
        json.dumps({"architectures": ["BertForSequenceClassification"], "num_labels": 1})
    )
    settings = dataclasses.replace(
        Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"),
        models=(
            ModelSpec(ref=str(reranker), name="ranker"),
            ModelSpec(ref=str(tmp_path / "absent"), name="chat", task="generate"),
            ModelSpec(ref=str(tmp_path / "absent"), name="pinned", task="classify", engine="openvino"),
        ),
    )
    report = detect()
    data = hardware_json(report)
    served = RunningModel(name="chat", task="generate", engine="torch", device="cpu")
    rows = {r["name"]: r for r in model_rows(settings, data, loaded={"chat": served})}
    assert rows["ranker"]["task"] == "rerank" and not rows["ranker"].get("loaded")
    # The engines the policy would try for an encoder head, as it ranks embeddings.
    embed = [c["engine"] for c in data["choices"]["embed"] if c["engine"] != "fake"]
    assert rows["ranker"]["engines"] == embed
    assert rows["chat"] == {
        **rows["chat"],
        "task": "generate",
        "engine": "torch",
        "device": "cpu",
        "loaded": True,
    }
    assert rows["pinned"]["engines"] == [e for e in embed if e == "openvino"]
    text = format_report(report, {**data, "models": list(rows.values())})
    section = text[text.index("Models (") :]
    assert "ranker" in section and "rerank" in section and "torch on cpu (loaded)" in section


def test_models_list_only_the_engines_that_read_their_options(tmp_path: Path) -> None:
    from hfd.daemon.settings import ModelSpec, Settings

    absent = str(tmp_path / "absent")
    settings = dataclasses.replace(
        Settings(state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"),
        models=(
            ModelSpec(ref=absent, name="plain", task="generate"),
            ModelSpec(ref=absent, name="draft", task="generate", options={"draft_model": "acme/d"}),
            ModelSpec(ref=absent, name="kept", task="generate", options={"prefix_cache_bytes": 1 << 20}),
        ),
    )
    data = {"choices": {"generate": [{"engine": "openvino"}, {"engine": "torch"}]}}
    rows = {r["name"]: r["engines"] for r in model_rows(settings, data, loaded={})}
    assert rows == {"plain": ["openvino", "torch"], "draft": ["openvino"], "kept": ["torch"]}


def test_each_engines_thread_count_is_printed_once() -> None:
    report = detect()
    data = hardware_json(report)
    data["defaults"] = {
        "torch": {"device": "cpu", "precision": "f32", "why": "fp32 weights", "threads": 97,
                  "threads_why": "the daemon's threads setting", "pool_options": []},
    }  # fmt: skip
    text = format_report(report, data)
    assert text.split().count("97") == 1
    assert "threads 97" in text.split("Engine threads and thread-pool options")[1]
    assert "fp32 weights" in text.split("Default compute on the CPU")[1]
