"""The seq2seq task: detection from a snapshot's facts (the config.json fields the Hub's T5,
BART, Marian, mBART and Pegasus snapshots carry), the pin, and the service rules (limits, chat
features a seq2seq model cannot honour). No engine library needed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hfd.client.errors import ContextLengthExceeded, InvalidRequest
from hfd.daemon.tasks import seq2seq
from hfd.daemon.tasks.detect import Snapshot
from hfd.daemon.tasks.registry import TASKS, detect_snapshot, detect_task, task_for


def _snap(config: dict[str, Any], **kw: Any) -> Snapshot:
    return Snapshot(config=config, **kw)


@pytest.mark.parametrize(
    "config",
    [
        {"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "is_encoder_decoder": True},
        {"architectures": ["T5WithLMHeadModel"], "model_type": "t5"},  # t5-small's old head name
        {"architectures": ["MT5ForConditionalGeneration"], "model_type": "mt5"},
        {"architectures": ["BartForConditionalGeneration"], "model_type": "bart"},
        {"architectures": ["MBartForConditionalGeneration"], "model_type": "mbart"},
        {"architectures": ["MarianMTModel"], "model_type": "marian", "is_encoder_decoder": True},
        {"architectures": ["PegasusForConditionalGeneration"], "model_type": "pegasus"},
        {
            "architectures": ["SomeNewForConditionalGeneration"],
            "model_type": "new",
            "is_encoder_decoder": True,
        },
    ],
)
def test_text_encoder_decoders_are_seq2seq(config: dict[str, Any]) -> None:
    assert detect_snapshot(_snap(config)) == "seq2seq"


@pytest.mark.parametrize(
    ("config", "processor", "task"),
    [
        ({"architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
          "is_encoder_decoder": True}, True, "transcribe"),
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, False, "generate"),
        ({"architectures": ["BartForSequenceClassification"], "model_type": "bart"}, False, "classify"),
        ({"architectures": ["VisionEncoderDecoderModel"], "model_type": "vision-encoder-decoder",
          "is_encoder_decoder": True}, True, None),
        ({"architectures": ["Speech2TextForConditionalGeneration"], "model_type": "speech_to_text",
          "is_encoder_decoder": True}, True, None),
    ],
)  # fmt: skip
def test_other_models_are_not_seq2seq(config: dict[str, Any], processor: bool, task: str | None) -> None:
    files = frozenset({"preprocessor_config.json"}) if processor else frozenset()
    snapshot = _snap(config, processor_files=files)
    assert not seq2seq.detect(snapshot)
    if task is not None:
        assert detect_snapshot(snapshot) == task


@pytest.mark.parametrize("tag", ["text2text-generation", "translation", "summarization"])
def test_pipeline_tags_name_seq2seq(tag: str) -> None:
    assert detect_snapshot(_snap({"architectures": ["UnknownModel"]}, pipeline_tag=tag)) == "seq2seq"


def test_pin_and_files(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BartForConditionalGeneration"]}))
    (tmp_path / "README.md").write_text("---\npipeline_tag: summarization\n---\n# card\n")
    assert detect_task(tmp_path) == "seq2seq"
    assert task_for("seq2seq", tmp_path) == "seq2seq"
    record = TASKS["seq2seq"]
    assert (record.scheduler, record.loader, record.engines) == ("generation", "load_seq2seq", ("torch",))


def _req(**kw: Any) -> Any:
    limit = kw.pop("limit", None)
    return SimpleNamespace(token_limit=lambda: limit, **kw)


def test_output_room_is_the_decoders_limit() -> None:
    model = SimpleNamespace(context_length=512, decoder_length=128)
    assert seq2seq.output_room(model, 500, _req(prompt="x")) == 128
    assert seq2seq.output_room(SimpleNamespace(context_length=512), 500, _req()) is None  # causal
    with pytest.raises(ContextLengthExceeded) as exc:
        seq2seq.output_room(model, 513, _req(messages=[]))
    assert exc.value.param == "messages"
    with pytest.raises(ContextLengthExceeded) as exc:
        seq2seq.output_room(model, 10, _req(prompt="x", limit=129))
    assert exc.value.param == "max_tokens"
    with pytest.raises(ContextLengthExceeded) as exc:
        seq2seq.output_room(model, 10, _req(prompt="x", limit=200, max_completion_tokens=200))
    assert exc.value.param == "max_completion_tokens"


def test_chat_tools_are_refused_by_name() -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    with pytest.raises(InvalidRequest) as exc:
        seq2seq.refuse_chat("seq2seq", SimpleNamespace(tools=tools, tool_choice=None))
    assert exc.value.param == "tools"
    with pytest.raises(InvalidRequest) as exc:
        seq2seq.refuse_chat("seq2seq", SimpleNamespace(tools=None, tool_choice="required"))
    assert exc.value.param == "tool_choice"
    seq2seq.refuse_chat("seq2seq", SimpleNamespace(tools=None, tool_choice="none"))
    seq2seq.refuse_chat("generate", SimpleNamespace(tools=tools, tool_choice="auto"))


def test_memory_estimate_counts_the_decoder_and_cross_attention_caches(tmp_path: Path) -> None:
    from hfd.daemon.models.memory import estimate_model

    config = {"model_type": "bart", "d_model": 64, "decoder_layers": 3, "decoder_attention_heads": 4,
              "max_position_embeddings": 128, "vocab_size": 400}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    got = estimate_model(tmp_path, "seq2seq", max_running=4)
    # (self + cross) x layers x heads x head_dim x (K, V) x fp32 x rows x positions
    assert got.kv_cache == 2 * 3 * 4 * 16 * 2 * 4 * 4 * 128
    t5 = {"model_type": "t5", "d_model": 64, "d_kv": 8, "num_layers": 2, "num_decoder_layers": 5, "num_heads": 4,
          "n_positions": 512}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(t5))
    assert estimate_model(tmp_path, "seq2seq", max_running=1).kv_cache == 2 * 5 * 4 * 8 * 2 * 4 * 512
