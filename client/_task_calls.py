"""Request builders for the text-head tasks (rerank, score, classify, ner); re-exported by
``_calls`` so ``_resources`` declares them like every other operation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hfd.client._calls import Call, KeepAlive, _body, clean
from hfd.client.protocol import OP_CLASSIFY, OP_NER, OP_RERANK, OP_SCORE


def rerank(
    model: str,
    query: str,
    documents: Sequence[str | Mapping[str, str]],
    *,
    top_n: int | None = None,
    return_documents: bool = True,
    keep_alive: KeepAlive = None,
    cache: bool = True,
    timeout: float | None = None,
) -> Call[dict[str, Any]]:
    """Documents ordered by a cross-encoder's relevance to ``query``, in the Cohere/Jina shape:
    ``{"id", "model", "results": [{"index", "relevance_score", "document": {"text"}}], "usage"}``."""
    body = clean(
        {"model": model, "query": query, "documents": list(documents), "top_n": top_n,
         "return_documents": return_documents, "keep_alive": keep_alive, "cache": cache}
    )  # fmt: skip
    return Call(OP_RERANK, body, _body, timeout)


def score(
    model: str,
    text_1: str | Sequence[str],
    text_2: str | Sequence[str],
    *,
    keep_alive: KeepAlive = None,
    cache: bool = True,
    timeout: float | None = None,
) -> Call[dict[str, Any]]:
    """vLLM's score: ``{"data": [{"index", "score"}]}`` for each (text_1, text_2) pair."""
    t1 = text_1 if isinstance(text_1, str) else list(text_1)
    t2 = text_2 if isinstance(text_2, str) else list(text_2)
    body = clean({"model": model, "text_1": t1, "text_2": t2, "keep_alive": keep_alive, "cache": cache})
    return Call(OP_SCORE, body, _body, timeout)


def classify(
    model: str,
    input: str | Sequence[str],
    *,
    task: str | None = None,
    candidate_labels: Sequence[str] | None = None,
    hypothesis_template: str | None = None,
    multi_label: bool | None = None,
    aggregation_strategy: str | None = None,
    ignore_labels: Sequence[str] | None = None,
    keep_alive: KeepAlive = None,
    cache: bool = True,
    timeout: float | None = None,
) -> Call[dict[str, Any]]:
    """vLLM's classify: ``{"data": [{"index", "label", "probs", "num_classes", "labels"}]}``;
    ``candidate_labels`` for zero-shot with an NLI model; ``task="token"`` for entities."""
    fields = {"task": task, "candidate_labels": _listed(candidate_labels),
              "hypothesis_template": hypothesis_template, "multi_label": multi_label,
              "aggregation_strategy": aggregation_strategy, "ignore_labels": _listed(ignore_labels)}  # fmt: skip
    return _over_input(OP_CLASSIFY, model, input, fields, keep_alive, cache, timeout)


def ner(
    model: str,
    input: str | Sequence[str],
    *,
    aggregation_strategy: str | None = None,
    ignore_labels: Sequence[str] | None = None,
    keep_alive: KeepAlive = None,
    cache: bool = True,
    timeout: float | None = None,
) -> Call[dict[str, Any]]:
    """Token classification: ``{"data": [{"index", "entities": [{"entity_group", "score",
    "word", "start", "end"}]}]}`` (aggregation strategies as transformers' pipeline)."""
    fields = {"aggregation_strategy": aggregation_strategy, "ignore_labels": _listed(ignore_labels)}
    return _over_input(OP_NER, model, input, fields, keep_alive, cache, timeout)


def _listed(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values is not None else None


def _over_input(
    op: str,
    model: str,
    input: str | Sequence[str],
    fields: dict[str, Any],
    keep_alive: KeepAlive,
    cache: bool,
    timeout: float | None,
) -> Call[dict[str, Any]]:
    """A call on ``input`` (one text or several) with the operation's own ``fields``."""
    texts = input if isinstance(input, str) else list(input)
    body = clean({"model": model, "input": texts, **fields, "keep_alive": keep_alive, "cache": cache})
    return Call(op, body, _body, timeout)
