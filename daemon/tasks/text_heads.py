"""Rerank, score, classification (plain and zero-shot) and token classification: the service
calls the operation table's rows make (``hfd.daemon.operations``).

Each call checks its bounds before any work, takes the model from the manager (held for the
request), checks the model's task, tokenises (pairs as pairs: segment ids go to the engine),
sends the ids through the model's encoder scheduler (dynamically batched with other requests'
inputs, dropped when the caller is cancelled) and turns the head's logits into the reference
implementations' scores (``text_post``). Results are deterministic, so they go through the
response cache keyed by the model's snapshot identity and the request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from hfd.backends.heads import Encoded, HeadConfig, HeadTokenizer, Truncation, batch_of
from hfd.client.errors import InvalidRequest
from hfd.daemon import cache as rcache
from hfd.daemon import reqctx
from hfd.daemon.scheduler.encoder import INLINE_TOKENIZE_CHARS
from hfd.daemon.schema import parse_keep_alive, utf8_length
from hfd.daemon.tasks import text_post
from hfd.daemon.tasks.text_requests import ClassifyRequest, RerankRequest, ScoreRequest, _TaskRequest

if TYPE_CHECKING:
    from hfd.daemon.models.loaded import LoadedModel
    from hfd.daemon.service import Service

Compute = Callable[["LoadedModel"], Awaitable[tuple[dict[str, Any], int]]]


def _head(lm: LoadedModel) -> tuple[HeadTokenizer, HeadConfig]:
    tokenizer = getattr(lm.model, "tokenizer", None)
    head = getattr(lm.model, "head", None)
    if not isinstance(tokenizer, HeadTokenizer) or not isinstance(head, HeadConfig):
        raise InvalidRequest(f"model {lm.name!r} has no classification head", param="model")
    return tokenizer, head


def _check_task(lm: LoadedModel, tasks: Sequence[str], route: str) -> None:
    if lm.task not in tasks:
        raise InvalidRequest(
            f"model {lm.name!r} is a {lm.task} model; {route} needs a {' or '.join(tasks)} model",
            param="model",
        )


async def _encode(
    tokenizer: HeadTokenizer, texts: list[str], pairs: list[str] | None, truncation: Truncation
) -> list[Encoded]:
    """Small requests on the event loop, large ones on a worker thread (as embeddings)."""
    size = sum(len(t) for t in texts) + sum(len(t) for t in pairs or ())
    if size <= INLINE_TOKENIZE_CHARS:
        return tokenizer.encode(texts, pairs, truncation=truncation)
    return await anyio.to_thread.run_sync(lambda: tokenizer.encode(texts, pairs, truncation=truncation))


async def _logits(lm: LoadedModel, encoded: list[Encoded]) -> tuple[list[np.ndarray], int]:
    result = await lm.encoder().run(batch_of(encoded))
    return result.rows, result.prompt_tokens


def _check_bytes(service: Service, texts: Sequence[str], param: str) -> None:
    size = sum(utf8_length(t) for t in texts)
    limit = service.settings.max_input_bytes
    if size > limit:
        raise InvalidRequest(
            f"the texts are {size} bytes together; the limit is {limit} bytes per request", param=param
        )


async def _serve(service: Service, kind: str, req: _TaskRequest, compute: Compute) -> dict[str, Any]:
    """The cache lookup, the model lease and the usage note around ``compute``."""
    keep_alive = parse_keep_alive(req.keep_alive)
    spec = service.manager.spec(req.model)
    # The snapshot identity covers the files, not a [[models]] task pin: two names for one
    # snapshot, one pinned to another task, must not share entries.
    kind = f"{kind}/{spec.task or 'detected'}"
    cache = service.cache if req.cache else None
    identity = service.manager.identity(req.model) if cache is not None else None

    async def hit(ident: str | None, name: str) -> dict[str, Any] | None:
        if cache is None or ident is None:
            return None
        value = await cache.aget(rcache.request_key(kind, ident, req))
        if value is None:
            return None
        body: dict[str, Any] = json.loads(value)
        reqctx.note_tokens(int(body.get("usage", {}).get("total_tokens", 0)), model=name)
        return _stamped(body, name)

    found = await hit(identity, spec.public_name)
    if found is not None:
        return found
    async with service.manager.acquire(req.model, keep_alive) as lm:
        if lm.identity != identity:
            found = await hit(lm.identity, lm.name)
            if found is not None:
                return found
        body, tokens = await compute(lm)
    body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    if cache is not None:
        await cache.aput(rcache.request_key(kind, lm.identity, req), json.dumps(body).encode())
    reqctx.note_tokens(tokens, model=lm.name)
    return _stamped(body, lm.name)


def _stamped(body: dict[str, Any], model: str) -> dict[str, Any]:
    return {"id": f"{body.get('object', 'task')}-{uuid.uuid4().hex[:24]}", "created": int(time.time()),
            "model": model, **body}  # fmt: skip


# ----------------------------------------------------------------------------- rerank and score


async def _pair_scores(lm: LoadedModel, queries: list[str], documents: list[str]) -> tuple[np.ndarray, int]:
    tokenizer, head = _head(lm)
    # sentence-transformers' CrossEncoder tokenises pairs with truncation=True (longest_first).
    encoded = await _encode(tokenizer, queries, documents, "longest_first")
    rows, tokens = await _logits(lm, encoded)
    return text_post.relevance(np.stack(rows), head), tokens


async def rerank(service: Service, req: RerankRequest) -> dict[str, Any]:
    documents = req.texts()
    _check_bytes(service, [req.query, *documents], "documents")

    async def compute(lm: LoadedModel) -> tuple[dict[str, Any], int]:
        _check_task(lm, ("rerank",), "rerank")
        scores, tokens = await _pair_scores(lm, [req.query] * len(documents), documents)
        order = sorted(range(len(documents)), key=lambda i: (-float(scores[i]), i))
        if req.top_n is not None:
            order = order[: req.top_n]
        results = []
        for i in order:
            item: dict[str, Any] = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                item["document"] = {"text": documents[i]}
            results.append(item)
        return {"object": "rerank", "results": results}, tokens

    return await _serve(service, "rerank", req, compute)


async def score(service: Service, req: ScoreRequest) -> dict[str, Any]:
    first, second = req.pairs()
    _check_bytes(service, [*first, *second], "text_2")

    async def compute(lm: LoadedModel) -> tuple[dict[str, Any], int]:
        _check_task(lm, ("rerank", "classify"), "/v1/score")
        scores, tokens = await _pair_scores(lm, first, second)
        data = [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(scores)]
        return {"object": "list", "data": data}, tokens

    return await _serve(service, "score", req, compute)


# ----------------------------------------------------------------------------- classification


async def classify(service: Service, req: ClassifyRequest) -> dict[str, Any]:
    texts = req.texts()
    _check_bytes(service, texts, "input")
    if req.task == "token":
        return await _serve(service, "ner", req, lambda lm: _token_classify(lm, req, texts))
    labels = req.labels() if req.candidate_labels is not None else None

    async def compute(lm: LoadedModel) -> tuple[dict[str, Any], int]:
        if lm.task == "token-classify" and req.task is None and labels is None:
            return await _token_classify(lm, req, texts)
        _check_task(lm, ("classify",), "/v1/classify")
        if labels is not None:
            return await _zero_shot(lm, req, texts, labels)
        tokenizer, head = _head(lm)
        encoded = await _encode(tokenizer, texts, None, "longest_first")
        rows, tokens = await _logits(lm, encoded)
        probs = text_post.class_probs(np.stack(rows), head)
        data = []
        for i, p in enumerate(probs):
            best = int(p.argmax())
            data.append({"index": i, "object": "classification", "label": head.labels[best],
                         "probs": [float(x) for x in p], "num_classes": len(p),
                         "labels": [{"label": head.labels[j], "score": float(x)} for j, x in enumerate(p)]})  # fmt: skip
        return {"object": "list", "data": data}, tokens

    return await _serve(service, "classify", req, compute)


async def _zero_shot(
    lm: LoadedModel, req: ClassifyRequest, texts: list[str], labels: list[str]
) -> tuple[dict[str, Any], int]:
    tokenizer, head = _head(lm)
    if text_post.entailment_ids(head)[0] == -1:
        raise InvalidRequest(
            f"model {lm.name!r} has no entailment label in its id2label; zero-shot needs an NLI model",
            param="candidate_labels",
        )
    hypotheses = [req.hypothesis_template.format(label) for label in labels]
    premises = [t for t in texts for _ in labels]
    # ZeroShotClassificationPipeline truncates the premise only (ONLY_FIRST).
    encoded = await _encode(tokenizer, premises, hypotheses * len(texts), "only_first")
    rows, tokens = await _logits(lm, encoded)
    scores = text_post.zero_shot(np.stack(rows), head, len(labels), req.multi_label)
    data = []
    for i, s in enumerate(scores):
        order = sorted(range(len(labels)), key=lambda j: -float(s[j]))
        data.append({"index": i, "object": "classification", "label": labels[order[0]],
                     "probs": [float(x) for x in s], "num_classes": len(labels),
                     "labels": [{"label": labels[j], "score": float(s[j])} for j in order]})  # fmt: skip
    return {"object": "list", "data": data}, tokens


async def _token_classify(
    lm: LoadedModel, req: ClassifyRequest, texts: list[str]
) -> tuple[dict[str, Any], int]:
    _check_task(lm, ("token-classify",), "token classification")
    tokenizer, head = _head(lm)
    encoded = await _encode(tokenizer, texts, None, "longest_first")
    rows, tokens = await _logits(lm, encoded)
    data = []
    for i, (text, enc, logits) in enumerate(zip(texts, encoded, rows, strict=True)):
        found = text_post.entities(
            text, enc, logits, head, req.aggregation_strategy, req.ignore_labels,
            subword_prefix=tokenizer.subword_prefix, unk_token_id=tokenizer.unk_token_id,
            tokens_to_string=tokenizer.tokens_to_string,
        )  # fmt: skip
        data.append({"index": i, "object": "entities", "entities": found})
    return {"object": "list", "data": data}, tokens
