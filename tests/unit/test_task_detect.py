"""Task detection from a snapshot's files: a table of config.json / README / modules.json
combinations and the task each must give, and the ``[[models]] task`` pin."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from hfd.client.errors import InvalidRequest, ModelUnavailable
from hfd.daemon.tasks import registry
from hfd.daemon.tasks.detect import pipeline_tag

SEQ = "BertForSequenceClassification"

CASES: list[tuple[str, dict[str, Any] | None, str | None, list[str] | None, str | None]] = [
    # (case, config.json, README pipeline_tag, modules.json types, expected task)
    ("cross-encoder: one label", {"architectures": [SEQ], "num_labels": 1}, None, None, "rerank"),
    (
        "cross-encoder: one id2label entry",
        {"architectures": ["XLMRobertaForSequenceClassification"], "id2label": {"0": "LABEL_0"}},
        None,
        None,
        "rerank",
    ),
    (
        "text-ranking tag with two labels",
        {"architectures": [SEQ], "num_labels": 2},
        "text-ranking",
        None,
        "rerank",
    ),
    (
        "sentiment: two labels",
        {
            "architectures": ["DistilBertForSequenceClassification"],
            "id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
        },
        "text-classification",
        None,
        "classify",
    ),
    (
        "NLI: three labels",
        {
            "architectures": ["BartForSequenceClassification"],
            "id2label": {"0": "contradiction", "1": "neutral", "2": "entailment"},
        },
        "zero-shot-classification",
        None,
        "classify",
    ),
    ("no num_labels: transformers' default of 2", {"architectures": [SEQ]}, None, None, "classify"),
    (
        "NER",
        {"architectures": ["BertForTokenClassification"], "id2label": {"0": "O", "1": "B-PER"}},
        "token-classification",
        None,
        "token-classify",
    ),
    ("causal LM", {"architectures": ["LlamaForCausalLM"]}, "text-generation", None, "generate"),
    ("GPT-2 head", {"architectures": ["GPT2LMHeadModel"]}, None, None, "generate"),
    (
        "sentence-transformers folder",
        {"architectures": ["BertModel"]},
        None,
        ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"],
        "embed",
    ),
    ("bare encoder", {"architectures": ["BertModel"]}, None, None, "embed"),
    (
        "bare encoder tagged token-classification",
        {"architectures": ["BertModel"]},
        "token-classification",
        None,
        "token-classify",
    ),
    ("no architectures, tagged text-ranking", {"model_type": "bert"}, "text-ranking", None, "rerank"),
    ("no architectures, no tag", {"model_type": "bert"}, None, None, "embed"),
]


def _snapshot(tmp: Path, config: dict[str, Any] | None, tag: str | None, modules: list[str] | None) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (tmp / "config.json").write_text(json.dumps(config))
    if tag is not None:
        (tmp / "README.md").write_text(
            f"---\nlicense: mit\npipeline_tag: {tag}\ntags:\n- x\n---\n# A model\n"
        )
    if modules is not None:
        (tmp / "modules.json").write_text(json.dumps([{"idx": i, "type": t} for i, t in enumerate(modules)]))
    return tmp


@pytest.mark.parametrize(("case", "config", "tag", "modules", "expected"), CASES, ids=[c[0] for c in CASES])
def test_detection_table(
    tmp_path: Path,
    case: str,
    config: dict[str, Any],
    tag: str | None,
    modules: list[str] | None,
    expected: str,
) -> None:
    assert registry.detect_task(_snapshot(tmp_path, config, tag, modules)) == expected


def test_the_head_beats_the_pipeline_tag(tmp_path: Path) -> None:
    # A NER model whose card says text-classification is still served as token classification:
    # the head in config.json decides what the weights compute.
    path = _snapshot(tmp_path, {"architectures": ["BertForTokenClassification"]}, "text-classification", None)
    assert registry.detect_task(path) == "token-classify"


def test_front_matter_only_at_the_top(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("# Card\n\n---\npipeline_tag: text-ranking\n---\n")
    assert pipeline_tag(tmp_path) is None
    (tmp_path / "README.md").write_text("---\npipeline_tag: 'text-ranking'\n---\n")
    assert pipeline_tag(tmp_path) == "text-ranking"


def test_no_config_is_unavailable_and_listing_says_unknown(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable):
        registry.detect_task(tmp_path)
    assert registry.guess_task(tmp_path) is None
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match="JSONDecodeError"):
        registry.detect_task(tmp_path)


def test_a_pin_overrides_detection_and_is_checked(tmp_path: Path) -> None:
    path = _snapshot(tmp_path, {"architectures": [SEQ], "num_labels": 1}, None, None)
    assert registry.task_for(None, path) == "rerank"
    assert registry.task_for("classify", path) == "classify"
    with pytest.raises(InvalidRequest, match="task must be one of"):
        registry.task_for("nonsense", path, "m")


def test_every_record_names_a_scheduler_and_a_loader() -> None:
    for r in registry.RECORDS:
        assert r.scheduler in typing.get_args(registry.SchedulerKind)
        assert r.loader in ("load_encoder", "load_generator") or r.loader.startswith("load_")
    assert len(set(registry.names())) == len(registry.RECORDS)


def test_text_heads_run_only_on_engines_with_a_head() -> None:
    # An engine without a head would load the bare encoder and answer with embeddings' math.
    # torch loads AutoModelFor*Classification; ONNX Runtime and OpenVINO its exported logits graph
    # (backends/onnx_heads, openvino_heads); the fake engine has no head and is never offered.
    for name in ("rerank", "classify", "token-classify"):
        assert registry.record(name).engines == ("torch", "onnxruntime", "openvino")
    assert registry.record("image-embed").engines == ("onnxruntime", "openvino", "torch")
