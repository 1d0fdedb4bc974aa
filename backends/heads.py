"""Encoder heads (sequence and token classification) shared by the engines that serve them.

An engine loads the head's weights its own way (transformers' ``AutoModelFor*Classification``,
an ONNX export); what is the same everywhere lives here: the head's labels and problem type from
``config.json`` (``HeadConfig``), and the tokenizer (``HeadTokenizer``) that turns texts and
text pairs into ids, segment ids and character offsets. The engine's ``embed`` returns the
head's logits: ``(n, labels)`` for a sequence head, ``(n, tokens, labels)`` right-padded for a
token head (the encoder scheduler cuts each row back to its length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hfd.backends.base import TokenizedBatch
from hfd.client.errors import InvalidRequest

HeadKind = Literal["sequence", "token"]
Truncation = Literal["longest_first", "only_first", "only_second"]
STRATEGIES: tuple[Truncation, ...] = ("longest_first", "only_first", "only_second")

# The head each task loads.
HEAD_OF_TASK: dict[str, HeadKind] = {"rerank": "sequence", "classify": "sequence", "token-classify": "token"}


@dataclass(frozen=True)
class HeadConfig:
    kind: HeadKind
    labels: tuple[str, ...]  # id2label in id order
    problem_type: str | None  # "multi_label_classification", "regression", ...
    # sentence-transformers' CrossEncoder activation ("sigmoid" | "identity"), when saved.
    activation: str | None = None

    @property
    def num_labels(self) -> int:
        return len(self.labels)


def head_config(config: dict[str, Any], kind: HeadKind) -> HeadConfig:
    """Labels as transformers' PretrainedConfig reads them: ``id2label``, else ``num_labels``
    generic names, else two."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        labels = tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k)))
    else:
        n = config.get("num_labels")
        labels = tuple(f"LABEL_{i}" for i in range(n if isinstance(n, int) and n > 0 else 2))
    st = config.get("sentence_transformers")
    activation = None
    if isinstance(st, dict) and isinstance(st.get("activation_fn"), str):
        name = st["activation_fn"].rsplit(".", 1)[-1].lower()
        activation = name if name in ("sigmoid", "identity") else None
    problem = config.get("problem_type")
    return HeadConfig(kind, labels, problem if isinstance(problem, str) else None, activation)


@dataclass
class Encoded:
    """One tokenised text or pair, with what post-processing needs."""

    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[int]  # 1 for special tokens
    tokens: list[str]
    word_ids: list[int | None]


class HeadTokenizer:
    """Texts and pairs to ids, thread-safe: one private Rust tokenizer per truncation strategy,
    each configured once and then only read (transformers' wrapper re-configures a shared one
    on each call, which races between threads)."""

    def __init__(
        self, backend_json: str, *, max_length: int, pad_token_id: int, type_ids: bool = True
    ) -> None:
        from tokenizers import Tokenizer

        self.max_length = max_length
        # Whether the model is given segment ids: as transformers' tokenizer does, only when
        # its model_input_names list token_type_ids (else the model sees zeros).
        self.type_ids = type_ids
        self.pad_token_id = pad_token_id
        self._by_strategy: dict[str, Any] = {}
        for strategy in STRATEGIES:
            tok = Tokenizer.from_str(backend_json)
            tok.no_padding()
            tok.enable_truncation(max_length=max_length, strategy=strategy)
            self._by_strategy[strategy] = tok
        first = self._by_strategy["longest_first"]
        self.subword_prefix: str | None = getattr(first.model, "continuing_subword_prefix", None)
        self._decoder = first.decoder
        self.unk_token_id: int | None = None
        unk = getattr(first.model, "unk_token", None)
        if isinstance(unk, str):
            self.unk_token_id = first.token_to_id(unk)

    def tokens_to_string(self, tokens: Sequence[str]) -> str:
        """transformers' ``convert_tokens_to_string``: the tokenizer's decoder over the tokens."""
        return str(self._decoder.decode(list(tokens))) if self._decoder is not None else " ".join(tokens)

    @classmethod
    def from_path(cls, path: Path, *, max_length: int, trust_remote_code: bool = False) -> HeadTokenizer:
        from hfd.backends._hf import fast_tokenizer

        hf, backend = fast_tokenizer(
            path, trust_remote_code=trust_remote_code, needed="its offsets are needed"
        )
        limit = int(hf.model_max_length) if 0 < hf.model_max_length < 10**7 else max_length
        pad = hf.pad_token_id
        return cls(
            backend.to_str(),
            max_length=min(limit, max_length),
            pad_token_id=int(pad or 0),
            type_ids="token_type_ids" in getattr(hf, "model_input_names", ()),
        )

    def encode(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        *,
        truncation: Truncation = "longest_first",
    ) -> list[Encoded]:
        tok = self._by_strategy[truncation]
        if pairs is None:
            items: list[Any] = list(texts)
        else:
            items = list(zip(texts, pairs, strict=True))
        try:
            encodings = tok.encode_batch(items, add_special_tokens=True)
        except Exception as exc:  # e.g. only_second with a first text longer than max_length
            raise InvalidRequest(f"cannot tokenize the input: {exc}", param="input") from exc
        return [
            Encoded(
                ids=list(e.ids),
                type_ids=list(e.type_ids) if self.type_ids else [0] * len(e.ids),
                offsets=[tuple(o) for o in e.offsets],
                special=list(e.special_tokens_mask),
                tokens=list(e.tokens),
                word_ids=list(e.word_ids),
            )
            for e in encodings
        ]

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        encoded = self.encode(texts)
        return batch_of(encoded)


def batch_of(encoded: Sequence[Encoded]) -> TokenizedBatch:
    return TokenizedBatch(ids=[e.ids for e in encoded], type_ids=[e.type_ids for e in encoded])


def pad_batch(batch: TokenizedBatch, pad_token_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``input_ids``, ``attention_mask`` and ``token_type_ids`` as int64 ``[n, longest]``,
    right-padded: the one padding of every engine's head (torch, ONNX Runtime, OpenVINO)."""
    lengths = batch.lengths
    width = max(lengths)
    ids = np.full((len(lengths), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    types = np.zeros((len(lengths), width), dtype=np.int64)
    for i, row in enumerate(batch.ids):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
        if batch.type_ids is not None:
            types[i, : len(row)] = batch.type_ids[i]
    return ids, mask, types


def check_lengths(batch: TokenizedBatch, max_length: int) -> None:
    for i, n in enumerate(batch.lengths):
        if n == 0:
            raise InvalidRequest(f"input {i} is empty", param="input")
        if n > max_length:
            raise InvalidRequest(f"input {i} has {n} tokens; the most is {max_length}", param="input")
