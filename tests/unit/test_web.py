"""The web page's routes and the OpenAPI document, in-process over ASGI with the real app:
static files with their types, cache validators and a strict CSP; the page off is 404 while
the document stays; the document covers every row of the table, including rows it does not
know; the recent usage rows, newest first, from the queue and the file."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from hfd.daemon import openapi
from hfd.daemon.access.usage import UsageLog, UsageRecord
from hfd.daemon.http.app import create_app
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.operations import OPERATIONS, Operation
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings, load_settings, with_overrides
from hfd.daemon.web.routes import CSP, static_files

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        environ={
            "HFD_STATE_DIR": str(tmp_path / "state"),
            "HFD_CACHE_DIR": str(tmp_path / "cache"),
            "HFD_RUNTIME_DIR": str(tmp_path / "run"),
        }
    )


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Service(settings, ModelManager(settings)), settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hfd.test") as client:
        yield client


async def test_the_page_and_its_files_have_types_validators_and_a_strict_csp(settings: Settings) -> None:
    async with serve(settings) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["cache-control"] == "no-cache"
        for name, media in (
            ("app.js", "text/javascript"),
            ("style.css", "text/css"),
            ("icon.svg", "image/svg"),
        ):
            r = await http.get(f"/web/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(media), name
            again = await http.get(f"/web/{name}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        for missing in ("/web/nope.js", "/web/../operations.py", "/web/static/app.js", "/web/"):
            r = await http.get(missing)
            assert r.status_code == 404, missing
            assert r.json()["error"]["code"] in ("not_found", "model_not_found")


def test_the_page_has_no_inline_script_or_style() -> None:
    # The CSP allows scripts and styles from the daemon only: inline ones would not run.
    html = static_files()["index.html"].body.decode()
    assert all('src="/web/' in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<script[^>]*>\s*[^<\s]", html), "inline script"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler"
    assert " style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html, "everything comes from the daemon"


async def test_with_the_page_off_it_is_404_and_the_document_stays(settings: Settings) -> None:
    async with serve(with_overrides(settings, http_web=False)) as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.get("/web/app.js")).status_code == 404
        doc = (await http.get("/openapi.json")).json()
    assert "/" not in doc["paths"] and "/web/{path}" not in doc["paths"]
    assert "/v1/chat/completions" in doc["paths"]


async def test_the_document_lists_every_route_the_door_serves(settings: Settings) -> None:
    async with serve(settings) as http:
        r = await http.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    listed = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    table = {(m, re.sub(r"\{(\w+):\w+\}", r"{\1}", p)) for o in OPERATIONS for m, p in o.http}
    assert listed == table
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatCompletionRequest"
    }
    ok = chat["responses"]["200"]["content"]
    assert ok["application/json"]["schema"]["$ref"].endswith("/ChatCompletion")
    assert ok["text/event-stream"]["x-item-schema"]["$ref"].endswith("/ChatCompletionChunk")
    assert chat["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert chat["x-hfd-scope"] == "inference"
    # Loopback without required keys: a key is optional.
    assert chat["security"] == [{"bearer": []}, {}]
    assert doc["paths"]["/health"]["get"]["security"] == []
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for ref in re.findall(r'"\$ref": ?"#/components/schemas/(\w+)"', r.text):
        assert ref in doc["components"]["schemas"], ref


class _Thing(BaseModel):
    model: str
    size: int = 1


def test_a_row_the_generator_does_not_know_is_still_documented() -> None:
    rows = [
        Operation("things.make", "unary", "models", http=(("POST", "/api/things"),), request=_Thing),
        Operation("things.watch", "streaming-kind", None, http=(("GET", "/api/things/{id:path}"),)),  # type: ignore[arg-type]
    ]
    doc = openapi.document(rows)
    make = doc["paths"]["/api/things"]["post"]
    assert make["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/_Thing")
    assert make["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/AnyObject")
    assert {"400", "401", "403", "404", "422", "500"} <= set(make["responses"])
    watch = doc["paths"]["/api/things/{id}"]["get"]
    assert {"application/json", "text/event-stream", "application/x-ndjson"} == set(
        watch["responses"]["200"]["content"]
    )
    assert watch["parameters"][0]["name"] == "id"


T0 = 1_790_000_000.25


def _record(i: int) -> UsageRecord:
    return UsageRecord(
        ts=T0 + i,
        request_id=f"r{i}",
        door="http",
        key="anonymous",
        model="m",
        route="/v1/embeddings",
        status=200,
        prompt_tokens=i,
        completion_tokens=0,
        latency_ms=1.5,
    )


def test_recent_usage_is_newest_first_from_the_queue_then_the_file(tmp_path: Path) -> None:
    log = UsageLog(tmp_path)
    for i in range(3):
        log.record(_record(i))
    log.flush()
    for i in range(3, 5):
        log.record(_record(i))
    rows: list[dict[str, Any]] = log.recent(4)
    assert [r["request_id"] for r in rows] == ["r4", "r3", "r2", "r1"]
    assert rows[2]["ts"] == pytest.approx(T0 + 2, abs=1e-3)  # unix seconds, as recorded
    assert log.recent(10)[-1]["request_id"] == "r0"


async def test_recent_usage_route_bounds_its_limit(settings: Settings) -> None:
    async with serve(settings) as http:
        assert (await http.get("/api/usage/recent")).json() == {"data": []}
        bad = await http.get("/api/usage/recent?limit=100000")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


async def test_with_keys_required_the_page_is_open_and_the_api_is_not(settings: Settings) -> None:
    async with serve(with_overrides(settings, auth_required="true")) as http:
        for path in ("/", "/web/app.js", "/openapi.json"):
            assert (await http.get(path)).status_code == 200, path
        for path in ("/api/ps", "/api/usage/recent"):
            r = await http.get(path)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), path
        doc = (await http.get("/openapi.json")).json()
    assert doc["paths"]["/api/ps"]["get"]["security"] == [{"bearer": []}]
    assert doc["paths"]["/api/usage/recent"]["get"]["x-hfd-scope"] == "admin"
