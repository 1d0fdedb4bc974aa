"""Tiny random-weight models of the text-head task families, built locally (no download):
a one-label cross-encoder (rerank), a three-label classifier with id2label, an NLI model with
entailment/neutral/contradiction labels (zero-shot) and a B-/I- token classifier (NER), each a
small BERT with the corpus WordPiece tokenizer (``support.models.wordpiece``), cached like the
other test models. Weights are drawn with a wide spread so heads give clearly different scores
(with BERT's default 0.02 every probability would sit near uniform and compare trivially)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support.models import _cached, _fields, wordpiece

VERSION = 1
MAX_LENGTH = 128
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_NAMES = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}  # fmt: skip

KINDS: dict[str, dict[str, Any]] = {
    "cross-encoder": {"head": "sequence", "labels": ["LABEL_0"], "seed": 21},
    "classifier": {"head": "sequence", "labels": ["negative", "neutral", "positive"], "seed": 22},
    "nli": {"head": "sequence", "labels": ["contradiction", "neutral", "entailment"], "seed": 23},
    "ner": {"head": "token", "labels": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "seed": 24},
    "multi-label": {"head": "sequence", "labels": ["a", "b", "c", "d"], "seed": 25,
                    "problem_type": "multi_label_classification"},
}  # fmt: skip


def _build(out: Path, kind: str) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
        PreTrainedTokenizerFast,
    )

    spec = KINDS[kind]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=wordpiece(_SPECIALS, "[CLS]", "[SEP]", 600), model_max_length=MAX_LENGTH, **_NAMES
    )
    labels = spec["labels"]
    config = BertConfig(
        **_fields(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH, pad_token_id=tokenizer.pad_token_id, initializer_range=0.3,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
        problem_type=spec.get("problem_type"),
        )
    )  # fmt: skip
    torch.manual_seed(spec["seed"])
    cls = BertForTokenClassification if spec["head"] == "token" else BertForSequenceClassification
    model: Any = cls(config)
    model.to(torch.float32).eval().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if kind == "cross-encoder":  # as sentence-transformers 6 saves a CrossEncoder
        cfg = json.loads((out / "config.json").read_text())
        cfg["sentence_transformers"] = {
            "version": "6.2.0",
            "activation_fn": "torch.nn.modules.activation.Sigmoid",
        }
        (out / "config.json").write_text(json.dumps(cfg, indent=2))


def task_model(kind: str, path: Path | None = None) -> Path:
    """The model directory of ``kind`` (one of ``KINDS``), built once and cached."""
    return _cached(f"task-{kind}", VERSION, lambda out: _build(out, kind), path)


def cross_encoder_scores(pairs: list[tuple[str, str]]) -> Any:
    """The oracle of rerank: sentence-transformers' CrossEncoder scores of the tiny cross-encoder."""
    import numpy as np
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(task_model("cross-encoder")), device="cpu")
    return np.asarray(model.predict(pairs), dtype=np.float64)
