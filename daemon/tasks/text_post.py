"""Scores from head logits, as the reference implementations compute them: sentence-transformers'
CrossEncoder (rerank), transformers' text-classification, zero-shot and token-classification
pipelines (their post-processing, re-done on numpy arrays so no pipeline object is needed).
Pure functions: the tests compare them, through the daemon, with those references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from hfd.backends.heads import Encoded, HeadConfig


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    out: np.ndarray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-x))
    return out


def relevance(logits: np.ndarray, head: HeadConfig) -> np.ndarray:
    """One score per pair, as CrossEncoder.predict: a one-label head through its activation
    (sigmoid by default, identity when the model's config says so); a head with several labels
    (pinned to rerank) scores the last label's softmax probability (the "relevant" class)."""
    if logits.shape[1] == 1:
        raw = logits[:, 0]
        return raw if head.activation == "identity" else sigmoid(raw)
    probs: np.ndarray = softmax(logits)[:, -1]
    return probs


def class_probs(logits: np.ndarray, head: HeadConfig) -> np.ndarray:
    """transformers' text-classification: sigmoid for multi-label (or one label), else softmax."""
    if head.problem_type == "multi_label_classification" or logits.shape[-1] == 1:
        return sigmoid(logits)
    return softmax(logits)


def entailment_ids(head: HeadConfig) -> tuple[int, int]:
    """(entailment, contradiction) ids as ZeroShotClassificationPipeline finds them: the first
    label starting with "entail" (else -1, the last), and 0 unless that is 0 (then -1)."""
    entail = next((i for i, name in enumerate(head.labels) if name.lower().startswith("entail")), -1)
    return entail, (-1 if entail == 0 else 0)


def zero_shot(logits: np.ndarray, head: HeadConfig, n_labels: int, multi_label: bool) -> np.ndarray:
    """Per text, a score per candidate label, from logits of (text, hypothesis) pairs laid out
    text by text: ZeroShotClassificationPipeline's post-processing."""
    reshaped = logits.reshape((-1, n_labels, logits.shape[-1]))
    entail, contra = entailment_ids(head)
    if n_labels == 1:
        multi_label = True
    if not multi_label:
        entail_logits = reshaped[..., entail]
        scores: np.ndarray = np.exp(entail_logits) / np.exp(entail_logits).sum(-1, keepdims=True)
        return scores
    pair = reshaped[..., [contra, entail]]
    probs: np.ndarray = np.exp(pair) / np.exp(pair).sum(-1, keepdims=True)
    return probs[..., 1]


def entities(
    text: str,
    encoded: Encoded,
    logits: np.ndarray,
    head: HeadConfig,
    strategy: str,
    ignore_labels: Sequence[str],
    *,
    subword_prefix: str | None,
    unk_token_id: int | None,
    tokens_to_string: Any,
) -> list[dict[str, Any]]:
    """TokenClassificationPipeline.postprocess for one text (one chunk)."""
    scores = softmax(logits.astype(np.float32))
    pre: list[dict[str, Any]] = []
    for idx, token_scores in enumerate(scores):
        if encoded.special[idx]:
            continue
        word = encoded.tokens[idx]
        start, end = encoded.offsets[idx]
        word_ref = text[start:end]
        if subword_prefix:
            is_subword = len(word) != len(word_ref)
        else:  # the pipeline's fallback for tokenizers that do not mark word pieces
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if unk_token_id is not None and encoded.ids[idx] == unk_token_id:
            word = word_ref
            is_subword = False
        pre.append({"word": word, "scores": token_scores, "start": start, "end": end, "index": idx,
                    "is_subword": is_subword})  # fmt: skip
    labels = head.labels
    if strategy in ("none", "simple"):
        found = []
        for p in pre:
            i = int(p["scores"].argmax())
            found.append({"entity": labels[i], "score": float(p["scores"][i]), "index": p["index"],
                          "word": p["word"], "start": p["start"], "end": p["end"]})  # fmt: skip
    else:
        found = _aggregate_words(pre, strategy, labels, tokens_to_string)
    if strategy != "none":
        found = _group_entities(found, tokens_to_string)
    return [
        e
        for e in found
        if e.get("entity") not in ignore_labels and e.get("entity_group") not in ignore_labels
    ]


def _aggregate_word(
    group: list[dict[str, Any]], strategy: str, labels: Sequence[str], join: Any
) -> dict[str, Any]:
    word = join([e["word"] for e in group])
    if strategy == "first":
        scores = group[0]["scores"]
    elif strategy == "max":
        scores = max(group, key=lambda e: e["scores"].max())["scores"]
    else:  # average
        scores = np.nanmean(np.stack([e["scores"] for e in group]), axis=0)
    i = int(scores.argmax())
    return {"entity": labels[i], "score": float(scores[i]), "word": word, "start": group[0]["start"],
            "end": group[-1]["end"]}  # fmt: skip


def _aggregate_words(
    pre: list[dict[str, Any]], strategy: str, labels: Sequence[str], join: Any
) -> list[dict[str, Any]]:
    words: list[dict[str, Any]] = []
    group: list[dict[str, Any]] | None = None
    for e in pre:
        if group is None:
            group = [e]
        elif e["is_subword"]:
            group.append(e)
        else:
            words.append(_aggregate_word(group, strategy, labels, join))
            group = [e]
    if group is not None:
        words.append(_aggregate_word(group, strategy, labels, join))
    return words


def _tag(name: str) -> tuple[str, str]:
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name  # not in B-/I- form: a continuation


def _group(group: list[dict[str, Any]], join: Any) -> dict[str, Any]:
    return {
        "entity_group": group[0]["entity"].split("-", 1)[-1],
        "score": float(np.mean(np.nanmean([e["score"] for e in group]))),
        "word": join([e["word"] for e in group]),
        "start": group[0]["start"],
        "end": group[-1]["end"],
    }


def _group_entities(found: list[dict[str, Any]], join: Any) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    for e in found:
        if not current:
            current.append(e)
            continue
        bi, tag = _tag(e["entity"])
        _, last_tag = _tag(current[-1]["entity"])
        if tag == last_tag and bi != "B":
            current.append(e)
        else:
            groups.append(_group(current, join))
            current = [e]
    if current:
        groups.append(_group(current, join))
    return groups
