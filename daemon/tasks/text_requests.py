"""Request bodies of the text-head tasks, for both doors (JSON over HTTP, msgpack over IPC).

Shapes follow the APIs clients already speak: rerank is Cohere's and Jina's (``query``,
``documents`` as strings or ``{"text": ...}``, ``top_n``, ``return_documents``), score and
classify are vLLM's (``text_1``/``text_2``; ``input``), zero-shot classification takes
``candidate_labels`` and ``hypothesis_template`` as transformers' pipeline does, and token
classification takes the pipeline's ``aggregation_strategy``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from hfd.client.errors import InvalidRequest
from hfd.daemon.schema import KeepAlive, _Base

# Bounds checked before any tokenising (docs/http-api.md lists them).
MAX_DOCUMENTS = 1000  # documents (or text pairs) per request
MAX_DOCUMENT_CHARS = 100_000  # characters per document, query or input text
MAX_CANDIDATE_LABELS = 64  # zero-shot labels per request

Aggregation = Literal["none", "simple", "first", "average", "max"]


class _TaskRequest(_Base):
    model: Annotated[str, Field(min_length=1)]
    keep_alive: KeepAlive = None
    cache: bool = True  # False bypasses the response cache
    user: str | None = None


class DocumentObject(_Base):
    text: str


def _check_text(text: str, param: str) -> str:
    if text == "":
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise InvalidRequest(
            f"{param} has {len(text)} characters; the most is {MAX_DOCUMENT_CHARS}", param=param
        )
    return text


def _check_count(n: int, param: str) -> None:
    if n == 0:
        raise InvalidRequest(f"{param} must not be empty", param=param)
    if n > MAX_DOCUMENTS:
        raise InvalidRequest(f"{n} {param} exceed the limit of {MAX_DOCUMENTS} per request", param=param)


class RerankRequest(_TaskRequest):
    query: str
    documents: list[str | DocumentObject]
    top_n: Annotated[int, Field(ge=1)] | None = None
    return_documents: bool = True

    def texts(self) -> list[str]:
        _check_text(self.query, "query")
        _check_count(len(self.documents), "documents")
        return [
            _check_text(d if isinstance(d, str) else d.text, f"documents[{i}]")
            for i, d in enumerate(self.documents)
        ]


class ScoreRequest(_TaskRequest):
    text_1: str | list[str]
    text_2: str | list[str]

    def pairs(self) -> tuple[list[str], list[str]]:
        """vLLM's pairing: one text_1 against each text_2, or the two lists element by element."""
        first = [self.text_1] if isinstance(self.text_1, str) else list(self.text_1)
        second = [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)
        _check_count(len(first), "text_1")
        _check_count(len(second), "text_2")
        if len(first) == 1:
            first = first * len(second)
        elif len(first) != len(second):
            raise InvalidRequest(
                f"text_1 has {len(first)} texts and text_2 {len(second)}: give one text_1 or as many as text_2",
                param="text_2",
            )
        for i, (a, b) in enumerate(zip(first, second, strict=True)):
            _check_text(a, f"text_1[{i}]")
            _check_text(b, f"text_2[{i}]")
        return first, second


class ClassifyRequest(_TaskRequest):
    input: str | list[str]
    # "token": token classification (as /v1/ner); None: the model's own head.
    task: Literal["sequence", "token"] | None = None
    # Zero-shot with an NLI model (transformers' ZeroShotClassificationPipeline).
    candidate_labels: list[str] | None = None
    hypothesis_template: str = "This example is {}."
    multi_label: bool = False
    # Token classification (transformers' TokenClassificationPipeline).
    aggregation_strategy: Aggregation = "simple"
    ignore_labels: list[str] = Field(default_factory=lambda: ["O"])

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else list(self.input)
        _check_count(len(texts), "input")
        return [_check_text(t, f"input[{i}]") for i, t in enumerate(texts)]

    def labels(self) -> list[str]:
        labels = list(self.candidate_labels or [])
        if not labels:
            raise InvalidRequest("candidate_labels must not be empty", param="candidate_labels")
        if len(labels) > MAX_CANDIDATE_LABELS:
            raise InvalidRequest(
                f"{len(labels)} candidate_labels exceed the limit of {MAX_CANDIDATE_LABELS}",
                param="candidate_labels",
            )
        for i, label in enumerate(labels):
            _check_text(label, f"candidate_labels[{i}]")
        if "{}" not in self.hypothesis_template:
            raise InvalidRequest(
                "hypothesis_template must contain {} where each label goes", param="hypothesis_template"
            )
        return labels


class NerRequest(ClassifyRequest):
    """``/v1/ner``: ``/v1/classify`` with ``task`` = token."""

    task: Literal["sequence", "token"] | None = "token"
