"""The locally built test models: the shapes, tokens and templates other tests rely on, and
builds that are reproducible and never seen half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support import models  # noqa: E402


def test_tiny_llama_has_the_promised_shape_and_tokens() -> None:
    path = models.tiny_llama()
    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 64)
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert config["max_position_embeddings"] == 256
    assert (path / "model.safetensors").is_file()
    assert not list(path.glob("*.bin"))
    tok = transformers.AutoTokenizer.from_pretrained(path)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert len(tok) == config["vocab_size"]
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<s><|user|>\nhi</s>\n<|assistant|>\n"
    text = "The quick brown fox."
    assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_tiny_bert_has_a_sentence_transformers_config() -> None:
    path = models.tiny_bert()
    modules = json.loads((path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and pooling["word_embedding_dimension"] == 32
    tok = transformers.AutoTokenizer.from_pretrained(path)
    ids = tok("the cat")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_builds_are_reproducible_and_atomic(tmp_path: Path) -> None:
    for build, cached in ((models.tiny_llama, models.tiny_llama()), (models.tiny_bert, models.tiny_bert())):
        fresh = build(tmp_path / cached.name)
        for name in ("model.safetensors", "tokenizer.json", "config.json"):
            assert (fresh / name).read_bytes() == (cached / name).read_bytes(), name
        # Building again is a no-op on an existing model.
        stamp = (fresh / "model.safetensors").stat().st_mtime_ns
        assert build(fresh) == fresh
        assert (fresh / "model.safetensors").stat().st_mtime_ns == stamp
    # Only finished models, no temporary build directories, are left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [models.tiny_llama().name, models.tiny_bert().name]
    )


def test_minilm_is_the_packaged_model() -> None:
    path = models.minilm()
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_size"] == 384 and (path / "model.safetensors").is_file()
    assert (path / "modules.json").is_file()
