"""The OpenAPI document of a real ``hfd serve`` (fake engine) describes what it answers: the
replies of the main operations, streamed and whole, validate against the document's response
models (``hfd.daemon.openapi_models``), errors against its error body, and the media types
are the documented ones."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from pydantic import BaseModel
from support.daemon import Daemon
from support.web_daemon import CHAT, EMBED, start_fake_daemon

from hfd.daemon import openapi_models as om

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_fake_daemon(tmp_path_factory.mktemp("openapi"))
    try:
        yield d
    finally:
        d.stop()


def check(model: type[BaseModel], data: object) -> None:
    model.model_validate(data)


def template(path: str) -> str:
    return "/v1/models/{model_id}" if path.startswith("/v1/models/") else path


def documented(doc: dict, method: str, path: str, status: int, media: str) -> bool:
    responses = doc["paths"][template(path)][method.lower()]["responses"]
    return str(status) in responses and media in responses[str(status)].get("content", {})


def test_replies_validate_against_the_documented_models(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    chat = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    unary = [
        ("GET", "/health", None, om.Health),
        ("GET", "/ready", None, om.Ready),
        ("GET", "/v1/models", None, om.ModelList),
        ("GET", f"/v1/models/{CHAT}", None, om.Model),
        ("POST", "/v1/chat/completions", chat, om.ChatCompletion),
        ("POST", "/v1/completions", {"model": CHAT, "prompt": "once", "max_tokens": 3}, om.Completion),
        ("POST", "/v1/embeddings", {"model": EMBED, "input": ["a", "b"]}, om.Embeddings),
        (
            "POST",
            "/v1/embeddings",
            {"model": EMBED, "input": "a", "encoding_format": "base64"},
            om.Embeddings,
        ),
        ("POST", "/api/load", {"model": EMBED}, om.LoadedModel),
        ("GET", "/api/ps", None, om.LoadedModels),
        ("GET", "/api/stats", None, om.Stats),
        ("GET", "/api/version", None, om.Version),
        ("GET", "/api/hardware", None, om.Hardware),
        ("GET", "/api/usage/recent", None, om.RecentUsage),
        ("POST", "/api/unload", {"model": EMBED}, om.Unloaded),
    ]
    for method, path, body, model in unary:
        r = http.request(method, path, json=body)
        assert r.status_code == 200, (path, r.text)
        media = r.headers["content-type"].split(";")[0]
        assert documented(doc, method, path, 200, media), (path, media)
        check(model, r.json())
        assert doc["paths"][template(path)][method.lower()]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]["$ref"].endswith("/" + model.__name__), path
    assert http.get("/api/ps").json()["models"], "the load above left a model loaded"


def test_streamed_chunks_validate_against_the_documented_item(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    for path, item, body in (
        ("/v1/chat/completions", om.ChatCompletionChunk, {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/completions", om.Completion, {"prompt": "once"}),
    ):
        body = {
            **body,
            "model": CHAT,
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        with http.stream("POST", path, json=body) as r:
            assert r.status_code == 200
            media = r.headers["content-type"].split(";")[0]
            assert media == "text/event-stream" and documented(doc, "POST", path, 200, media)
            events = [line[5:].strip() for line in r.iter_lines() if line.startswith("data:")]
        assert events[-1] == "[DONE]"
        for event in events[:-1]:
            check(item, json.loads(event))
        ref = doc["paths"][path]["post"]["responses"]["200"]["content"][media]["x-item-schema"]["$ref"]
        assert ref.endswith("/" + item.__name__)


def test_errors_validate_against_the_error_body_at_documented_statuses(http: httpx.Client) -> None:
    doc = http.get("/openapi.json").json()
    cases = [
        (
            "POST",
            "/v1/chat/completions",
            {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
            (404,),
        ),
        ("POST", "/v1/chat/completions", {"model": CHAT, "messages": []}, (400, 422)),
        ("POST", "/v1/embeddings", {"model": EMBED, "input": ""}, (400,)),
        ("GET", "/v1/models/nope", None, (404,)),
        ("POST", "/api/load", {"model": "nope"}, (404,)),
    ]
    # A shape error is 422 or, as OpenAI answers it, 400: both are documented.
    for method, path, body, statuses in cases:
        r = http.request(method, path, json=body)
        assert r.status_code in statuses, (path, r.text)
        assert documented(doc, method, path, r.status_code, "application/json"), (path, r.status_code)
        check(om.ErrorBody, r.json())


def test_the_page_and_the_document_are_not_usage(http: httpx.Client) -> None:
    # The page polls while open: its files, the document and the log's reader stay out of it.
    for path in ("/", "/web/app.js", "/openapi.json", "/api/usage/recent"):
        assert http.get(path).status_code == 200, path
    marker = {"X-Request-Id": "usage-marker-1"}
    assert http.get("/api/version", headers=marker).status_code == 200
    deadline = time.monotonic() + 30
    while True:  # the record is written as the reply ends, so it may trail the reply a little
        rows = http.get("/api/usage/recent", params={"limit": 500}).json()["data"]
        if any(r["request_id"] == "usage-marker-1" for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    routes = {r["route"] for r in rows}
    assert "/api/version" in routes
    assert not routes & {"/", "/web/{path:path}", "/openapi.json", "/api/usage/recent"}, routes
