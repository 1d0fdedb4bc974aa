"""The HTTP app's routing and error paths, driven in-process over ASGI with the real service
(no model is loaded here: these paths fail or answer before one would be)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hfd import __version__
from hfd.client.errors import Overloaded
from hfd.daemon.http.app import create_app
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.service import Service
from hfd.daemon.settings import ModelSpec, Settings, load_settings, with_overrides

pytestmark = pytest.mark.anyio

LIMIT = 4096


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    base = load_settings(
        environ={
            "HFD_STATE_DIR": str(tmp_path / "state"),
            "HFD_CACHE_DIR": str(tmp_path / "cache"),
            "HFD_RUNTIME_DIR": str(tmp_path / "run"),
        }
    )
    models = (
        ModelSpec(ref=str(tmp_path / "absent-model"), name="chat", task="generate"),
        ModelSpec(ref="org/name", task="embed"),
    )
    return with_overrides(base, models=models, http_max_body_bytes=LIMIT)


@asynccontextmanager
async def serve(
    settings: Settings, service_type: type[Service] = Service
) -> AsyncIterator[httpx.AsyncClient]:
    service = service_type(settings, ModelManager(settings))
    transport = httpx.ASGITransport(app=create_app(service, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://hfd.test") as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


async def test_health_version_and_models(settings: Settings) -> None:
    async with serve(settings) as client:
        health = (await client.get("/health")).json()
        assert health["status"] == "ok" and health["version"] == __version__
        assert (await client.get("/api/version")).json()["version"] == __version__
        models = (await client.get("/v1/models")).json()
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["chat", "org/name"]
        assert all(m["object"] == "model" and m["owned_by"] == "hfd" for m in models["data"])
        # Ids with a slash (org/name) are one path parameter.
        one = await client.get("/v1/models/org/name")
        assert one.status_code == 200 and one.json()["id"] == "org/name"
        missing = await client.get("/v1/models/nope")
        assert missing.status_code == 404 and error_of(missing)["code"] == "model_not_found"
        assert (await client.get("/api/ps")).json() == {"models": []}


async def test_unknown_route_and_wrong_method(settings: Settings) -> None:
    async with serve(settings) as client:
        r = await client.get("/v2/whatever")
        assert r.status_code == 404 and error_of(r)["code"] == "not_found"
        r = await client.get("/v1/chat/completions")
        assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
        assert "POST" in r.headers["allow"]


@pytest.mark.parametrize(
    ("content", "code", "status"),
    [
        (b"{not json", "invalid_json", 400),
        (b"", "invalid_json", 400),
        (b"\xff\xfe\x00garbage", "invalid_json", 400),
        (b"[1, 2]", "validation_error", 400),
        (b'"just a string"', "validation_error", 400),
    ],
)
async def test_bodies_that_are_not_a_json_object(
    settings: Settings, content: bytes, code: str, status: int
) -> None:
    async with serve(settings) as client:
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/load", "/api/pull"):
            r = await client.post(path, content=content, headers={"content-type": "application/json"})
            assert r.status_code == status, (path, r.text)
            assert error_of(r)["code"] == code


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "chat"}, "messages"),
        ("/v1/chat/completions", {"model": "chat", "messages": "hi"}, "messages"),
        (
            "/v1/chat/completions",
            {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"model": "chat", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        ("/v1/completions", {"model": 5, "prompt": "x"}, "model"),
        ("/v1/embeddings", {"model": "org/name", "input": 5}, "input"),
        ("/v1/embeddings", {"model": "org/name", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ("/api/load", {"name": "chat"}, "model"),
    ],
)
async def test_schema_errors_are_400_naming_the_field(
    settings: Settings, path: str, body: dict[str, Any], param: str
) -> None:
    async with serve(settings) as client:
        r = await client.post(path, json=body)
        assert r.status_code == 400, r.text
        err = error_of(r)
        assert err["code"] == "validation_error"
        assert err["param"].startswith(param)


async def test_unknown_model_is_404_also_for_streams(settings: Settings) -> None:
    async with serve(settings) as client:
        chat = {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
        for body in (chat, {**chat, "stream": True}):
            r = await client.post("/v1/chat/completions", json=body)
            assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
            assert error_of(r)["code"] == "model_not_found"
        r = await client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
        assert r.status_code == 404 and error_of(r)["param"] == "model"
        r = await client.post("/api/unload", json={"model": "nope"})
        assert r.status_code == 404


async def test_body_limit_by_declared_length(settings: Settings) -> None:
    async with serve(settings) as client:
        body = json.dumps({"model": "org/name", "input": "x" * LIMIT}).encode()
        r = await client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
        assert str(len(body)) in error_of(r)["message"]


async def test_body_limit_counts_a_chunked_body(settings: Settings) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "org/name", "input": "'
        for _ in range(LIMIT // 512 + 1):
            yield b"y" * 512
        yield b'"}'

    async with serve(settings) as client:
        r = await client.post("/v1/embeddings", content=chunks())
        assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
        # Just under the limit passes the size check (and fails later, on the unknown model).
        r = await client.post("/v1/embeddings", json={"model": "nope", "input": "z" * (LIMIT // 2)})
        assert r.status_code == 404


class FaultyService(Service):
    """The real service with faults injected into two calls."""

    def ps(self) -> list[dict[str, Any]]:
        raise RuntimeError("secret internals")

    def models(self) -> list[dict[str, Any]]:
        raise Overloaded("queue full", retry_after=2.5)


async def test_unexpected_error_is_500_and_the_app_keeps_serving(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        async with serve(settings, FaultyService) as client:
            r = await client.get("/api/ps")
            assert r.status_code == 500
            err = error_of(r)
            assert err["code"] == "internal_error" and "secret" not in err["message"]
            assert (await client.get("/health")).status_code == 200
    assert any("unexpected error" in rec.getMessage() for rec in caplog.records)


async def test_retry_after_header(settings: Settings) -> None:
    async with serve(settings, FaultyService) as client:
        r = await client.get("/v1/models")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "3"
        assert error_of(r)["code"] == "overloaded"


def test_cors_headers_only_when_configured(settings: Settings) -> None:
    from starlette.testclient import TestClient

    def preflight(s: Settings) -> httpx.Response:
        app = create_app(Service(s, _manager(s)), s)
        with TestClient(app) as client:
            return client.options(
                "/v1/models", headers={"Origin": "http://app.local", "Access-Control-Request-Method": "GET"}
            )

    assert "access-control-allow-origin" not in preflight(settings).headers
    allowed = with_overrides(settings, http_cors_origins=("http://app.local",))
    assert preflight(allowed).headers["access-control-allow-origin"] == "http://app.local"


def _manager(settings: Settings) -> ModelManager:
    # ModelManager creates anyio primitives, which need a running event loop.
    import anyio

    async def make() -> ModelManager:
        return ModelManager(settings)

    return anyio.run(make)
