"""Rerank, score, classification (plain, multi-label, zero-shot) and token classification
through a real daemon, over HTTP (plain httpx) and IPC (hfd.client), compared with the
reference implementations run here on the same model files: sentence-transformers'
CrossEncoder.predict and transformers' pipelines (scores within 1e-4)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from support.daemon import Daemon, running_daemon
from support.task_models import cross_encoder_scores, task_model

from hfd.client import Client
from hfd.client.errors import InvalidRequest

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

TOL = 1e-4
QUERY = "what is the capital of france?"
DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Cats sleep for most of the day, while dogs prefer to play in the garden.",
    "A spider has eight legs.",
    "Rivers flow to the sea and mountains rise above the clouds.",
]
TEXTS = ["The weather today is sunny with a light breeze from the west.", "She opened the window.", "hola"]
NER_TEXTS = [
    "Paris is the capital of France and John wrote a letter.",
    "He wrote a long letter to his friend.",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    models = {k: task_model(k) for k in ("cross-encoder", "classifier", "nli", "ner", "multi-label")}
    pinned = f"[[models]]\nname = 'pinned'\nref = {str(task_model('cross-encoder'))!r}\ntask = 'classify'\n"
    with running_daemon(
        tmp_path_factory.mktemp("heads"), models, extra_config=pinned, args=["--engine", "torch"]
    ) as d:
        yield d


def _post(d: Daemon, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(d.http + path, json=body, timeout=120)


def _ok(d: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return d.post_ok(path, body)


# ----------------------------------------------------------------------------- oracles


def _pipeline(task: str, kind: str, **kwargs: Any) -> Any:
    from transformers import pipeline

    return pipeline(task, model=str(task_model(kind)), device="cpu", **kwargs)  # type: ignore[call-overload]


# ----------------------------------------------------------------------------- tests


def test_models_list_shows_each_task_before_loading(daemon: Daemon) -> None:
    listed = {m["id"]: m for m in httpx.get(daemon.http + "/v1/models").json()["data"]}
    assert {k: (v["task"], v["loaded"]) for k, v in listed.items()} == {
        "cross-encoder": ("rerank", False), "classifier": ("classify", False), "nli": ("classify", False),
        "ner": ("token-classify", False), "multi-label": ("classify", False), "pinned": ("classify", False),
    }  # fmt: skip


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_equals_cross_encoder(daemon: Daemon, path: str) -> None:
    expected = cross_encoder_scores([(QUERY, d) for d in DOCS])
    body = _ok(daemon, path, {"model": "cross-encoder", "query": QUERY, "documents": DOCS})
    results = body["results"]
    assert [r["index"] for r in results] == sorted(range(len(DOCS)), key=lambda i: -expected[i])
    for r in results:
        assert abs(r["relevance_score"] - expected[r["index"]]) < TOL
        assert r["document"] == {"text": DOCS[r["index"]]}
    assert body["model"] == "cross-encoder" and body["usage"]["total_tokens"] > 0
    top = _ok(daemon, path, {"model": "cross-encoder", "query": QUERY, "documents": [{"text": d} for d in DOCS],
                             "top_n": 2, "return_documents": False})["results"]  # fmt: skip
    assert [r["index"] for r in top] == [r["index"] for r in results[:2]] and "document" not in top[0]


def test_score_equals_cross_encoder(daemon: Daemon) -> None:
    expected = cross_encoder_scores([(QUERY, d) for d in DOCS])
    data = _ok(daemon, "/v1/score", {"model": "cross-encoder", "text_1": QUERY, "text_2": DOCS})["data"]
    assert [d["index"] for d in data] == list(range(len(DOCS)))
    assert np.allclose([d["score"] for d in data], expected, atol=TOL)
    pairs = _ok(daemon, "/v1/score", {"model": "cross-encoder", "text_1": DOCS[:2], "text_2": DOCS[2:4]})[
        "data"
    ]
    assert np.allclose(
        [d["score"] for d in pairs],
        cross_encoder_scores(list(zip(DOCS[:2], DOCS[2:4], strict=True))),
        atol=TOL,
    )


@pytest.mark.parametrize("kind", ["classifier", "multi-label"])
def test_classify_equals_text_classification_pipeline(daemon: Daemon, kind: str) -> None:
    pipe = _pipeline("text-classification", kind, top_k=None)
    data = _ok(daemon, "/v1/classify", {"model": kind, "input": TEXTS})["data"]
    for item, text in zip(data, TEXTS, strict=True):
        expected = {e["label"]: e["score"] for e in pipe([text])[0]}
        got = {e["label"]: e["score"] for e in item["labels"]}
        assert got.keys() == expected.keys()
        assert all(abs(got[k] - expected[k]) < TOL for k in got)
        assert item["label"] == max(expected, key=lambda k: expected[k])
        assert item["num_classes"] == len(expected) == len(item["probs"])


@pytest.mark.parametrize("multi_label", [False, True])
def test_zero_shot_equals_pipeline(daemon: Daemon, multi_label: bool) -> None:
    pipe = _pipeline("zero-shot-classification", "nli")
    labels = ["weather", "animals", "travel"]
    template = "This text is about {}."
    body = {"model": "nli", "input": TEXTS[:2], "candidate_labels": labels, "hypothesis_template": template,
            "multi_label": multi_label}  # fmt: skip
    data = _ok(daemon, "/v1/classify", body)["data"]
    for item, text in zip(data, TEXTS[:2], strict=True):
        ref = pipe(text, candidate_labels=labels, hypothesis_template=template, multi_label=multi_label)
        assert [e["label"] for e in item["labels"]] == ref["labels"]
        assert np.allclose([e["score"] for e in item["labels"]], ref["scores"], atol=TOL)


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_ner_equals_token_classification_pipeline(daemon: Daemon, strategy: str) -> None:
    # ignore_labels=[] so the random model's entities are compared token for token, "O" included.
    pipe = _pipeline("token-classification", "ner", aggregation_strategy=strategy, ignore_labels=[])
    data = _ok(daemon, "/v1/ner", {"model": "ner", "input": NER_TEXTS, "aggregation_strategy": strategy,
                                   "ignore_labels": []})["data"]  # fmt: skip
    for item, text in zip(data, NER_TEXTS, strict=True):
        ref = pipe(text)
        got = item["entities"]
        assert len(got) == len(ref)
        for g, r in zip(got, ref, strict=True):
            key = "entity" if strategy == "none" else "entity_group"
            assert (g[key], g["word"], g["start"], g["end"]) == (r[key], r["word"], r["start"], r["end"])
            assert abs(g["score"] - float(r["score"])) < TOL
    same = _ok(daemon, "/v1/classify", {"model": "ner", "task": "token", "input": NER_TEXTS,
                                        "aggregation_strategy": strategy, "ignore_labels": [], "cache": False})  # fmt: skip
    assert [d["entities"] for d in same["data"]] == [d["entities"] for d in data]


def test_concurrent_requests_equal_one_at_a_time(daemon: Daemon) -> None:
    bodies = [
        {"model": "cross-encoder", "query": DOCS[i % 5], "documents": DOCS, "cache": False} for i in range(16)
    ]
    alone = [_ok(daemon, "/v1/rerank", b)["results"] for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda b: _ok(daemon, "/v1/rerank", b)["results"], bodies))
    for a, t in zip(alone, together, strict=True):
        assert [r["index"] for r in a] == [r["index"] for r in t]
        assert np.allclose([r["relevance_score"] for r in a], [r["relevance_score"] for r in t], atol=1e-5)


def test_ipc_client_methods(daemon: Daemon) -> None:
    with Client(daemon.ipc, timeout=120) as client:
        reranked = client.rerank("cross-encoder", QUERY, DOCS, top_n=3)
        http = _ok(
            daemon, "/v1/rerank", {"model": "cross-encoder", "query": QUERY, "documents": DOCS, "top_n": 3}
        )
        assert [r["index"] for r in reranked["results"]] == [r["index"] for r in http["results"]]
        assert np.allclose([r["relevance_score"] for r in reranked["results"]],
                           [r["relevance_score"] for r in http["results"]], atol=1e-6)  # fmt: skip
        scored = client.score("cross-encoder", QUERY, DOCS[:2])
        assert len(scored["data"]) == 2
        classified = client.classify("classifier", TEXTS)
        assert [d["label"] for d in classified["data"]] == [
            d["label"] for d in _ok(daemon, "/v1/classify", {"model": "classifier", "input": TEXTS})["data"]
        ]
        entities = client.ner("ner", NER_TEXTS[0], aggregation_strategy="first", ignore_labels=[])
        assert entities["data"][0]["entities"]
        with pytest.raises(InvalidRequest):
            client.rerank("classifier", QUERY, DOCS)


def test_bad_input_is_a_400_with_param(daemon: Daemon) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/v1/rerank", {"model": "cross-encoder", "query": QUERY, "documents": ["x"] * 1001}, "documents"),
        ("/v1/rerank", {"model": "cross-encoder", "query": QUERY, "documents": []}, "documents"),
        ("/v1/rerank", {"model": "cross-encoder", "query": "", "documents": DOCS}, "query"),
        ("/v1/rerank", {"model": "cross-encoder", "query": QUERY, "documents": ["x" * 100_001]}, "documents[0]"),
        ("/v1/rerank", {"model": "classifier", "query": QUERY, "documents": DOCS}, "model"),
        ("/v1/score", {"model": "cross-encoder", "text_1": DOCS[:2], "text_2": DOCS[:3]}, "text_2"),
        ("/v1/classify", {"model": "classifier", "input": "x", "candidate_labels": ["a"]}, "candidate_labels"),
        ("/v1/classify", {"model": "nli", "input": "x", "candidate_labels": ["a"], "hypothesis_template": "no slot"},
         "hypothesis_template"),
        ("/v1/ner", {"model": "classifier", "input": "x"}, "model"),
    ]  # fmt: skip
    for path, body, param in cases:
        r = _post(daemon, path, body)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["error"]["param"] == param, r.text


def test_a_pinned_task_overrides_detection(daemon: Daemon) -> None:
    # The cross-encoder's files say rerank; [[models]] task = "classify" serves its head as a
    # one-label classifier (sigmoid), and refuses rerank.
    _ok(daemon, "/v1/rerank", {"model": "cross-encoder", "query": QUERY, "documents": DOCS})  # cached now
    data = _ok(daemon, "/v1/classify", {"model": "pinned", "input": TEXTS[:1]})["data"]
    assert data[0]["num_classes"] == 1 and 0.0 < data[0]["probs"][0] < 1.0
    assert (
        _post(daemon, "/v1/rerank", {"model": "pinned", "query": QUERY, "documents": DOCS}).status_code == 400
    )
    ps = {m["name"]: m["task"] for m in httpx.get(daemon.http + "/api/ps").json()["models"]}
    assert ps["pinned"] == "classify"


def test_repeated_request_is_served_from_the_cache(daemon: Daemon) -> None:
    body = {"model": "classifier", "input": ["a cached request"]}
    first = _ok(daemon, "/v1/classify", body)
    stats = httpx.get(daemon.http + "/api/stats").json()["cache"]
    second = _ok(daemon, "/v1/classify", body)
    after = httpx.get(daemon.http + "/api/stats").json()["cache"]
    assert second["data"] == first["data"] and second["id"] != first["id"]
    assert after.get("hits", 0) == stats.get("hits", 0) + 1, (stats, after)


def test_cohere_sdk_reranks_through_the_daemon(daemon: Daemon) -> None:
    # The official Cohere SDK, pointed at the daemon with base_url, as apps (and LangChain's and
    # llama-index's Cohere rerankers, which wrap this client) call it.
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=daemon.http)
    reply = client.rerank(model="cross-encoder", query=QUERY, documents=DOCS, top_n=3)
    expected = cross_encoder_scores([(QUERY, d) for d in DOCS])
    assert [r.index for r in reply.results] == sorted(range(len(DOCS)), key=lambda i: -expected[i])[:3]
    assert all(abs(r.relevance_score - expected[r.index]) < TOL for r in reply.results)
