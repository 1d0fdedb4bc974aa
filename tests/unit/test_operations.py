"""The one table of operations (``hfd.daemon.operations``) is complete, and the doors and the
scope checks are read from it: every operation has a scope, an HTTP route or an IPC op, and a
method in both ``hfd.client.Client`` and ``AsyncClient`` (or a reason why not); the HTTP app
serves exactly the table's routes, the IPC door dispatches exactly its ops, and the scopes the
access checks give are the table's. The routes and ops themselves are pinned here, so losing a
row (an HTTP-only one too) fails a test: removing a route is an edit of this file as well."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route

from hfd.client import AsyncClient, Client
from hfd.client import protocol as p
from hfd.client.transport import AsyncMemoryTransport, MemoryTransport
from hfd.daemon.access.auth import KNOWN_PATHS, scope_for_http, scope_for_ipc
from hfd.daemon.access.keys import ALL_SCOPES
from hfd.daemon.http.app import create_app
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.operations import OPERATIONS, Operation
from hfd.daemon.service import Service
from hfd.daemon.settings import Settings, load_settings
from hfd.daemon.zmq.server import IpcServer

ROWS = [pytest.param(o, id=o.name) for o in OPERATIONS]
KINDS = {"unary", "generation", "embedding", "progress"}

# Every route and op hfd serves. A row may be added without touching these; one that goes away
# (or changes its method or path) must be taken out here too.
HTTP_ROUTES = {
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id:path}"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/api/ps"),
    ("POST", "/api/load"),
    ("POST", "/api/unload"),
    ("POST", "/api/tune"),
    ("POST", "/api/pull"),
    ("GET", "/api/stats"),
    ("GET", "/api/version"),
    ("GET", "/api/hardware"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
    ("GET", "/web/{path:path}"),
    ("GET", "/api/usage/recent"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    # Ollama's API
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("GET", "/api/tags"),
    ("POST", "/api/show"),
    ("DELETE", "/api/delete"),
    ("POST", "/api/copy"),
    # the Responses and Anthropic Messages APIs
    ("POST", "/v1/responses"),
    ("GET", "/v1/responses/{response_id}"),
    ("DELETE", "/v1/responses/{response_id}"),
    ("GET", "/v1/responses/{response_id}/input_items"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    # text heads and speech
    ("POST", "/v1/rerank"),
    ("POST", "/rerank"),
    ("POST", "/v1/score"),
    ("POST", "/v1/classify"),
    ("POST", "/v1/ner"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/translations"),
}
IPC_OPS = {
    "health",
    "cancel",
    "models.list",
    "models.ps",
    "models.load",
    "models.unload",
    "models.tune",
    "models.pull",
    "chat.completions.create",
    "completions.create",
    "embeddings.create",
    "hardware",
    "stats",
    "tokenize",
    "detokenize",
    "rerank",
    "score",
    "classify",
    "ner",
    "audio.transcriptions.create",
    "audio.translations.create",
    "responses.create",
    "responses.retrieve",
    "responses.delete",
    "responses.input_items",
}


def settings(tmp_path: Path) -> Settings:
    return load_settings(
        cli={"state_dir": tmp_path / "state", "runtime_dir": tmp_path / "run", "usage_enabled": False},
        environ={},
    )


def _no_daemon(frames: list[bytes]) -> Any:  # pragma: no cover - never called: nothing is sent
    raise AssertionError("the test only reads attributes")


def _attribute(obj: object, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("operation", ROWS)
def test_every_operation_has_a_scope_a_door_and_a_client_method(operation: Operation) -> None:
    assert operation.kind in KINDS
    assert operation.scope is None or operation.scope in ALL_SCOPES
    assert operation.op is not None or operation.http, "neither an IPC op nor an HTTP route"
    if operation.op is not None:
        constants = {v for k, v in vars(p).items() if k.startswith("OP_")}
        assert operation.op in constants, "the IPC op is a constant of hfd.client.protocol"
    if operation.client is None:
        assert operation.no_client, "a row without a client method says why"
        return
    with Client(transport=MemoryTransport(_no_daemon)) as client:
        assert callable(_attribute(client, operation.client))
    async_client = AsyncClient(transport=AsyncMemoryTransport(_no_daemon))
    assert callable(_attribute(async_client, operation.client))


def test_no_route_or_op_is_lost() -> None:
    routes = {route for o in OPERATIONS for route in o.http}
    assert HTTP_ROUTES - routes == set(), "routes gone from the operation table"
    assert IPC_OPS - {o.op for o in OPERATIONS if o.op is not None} == set(), "IPC ops gone from the table"


def test_every_protocol_op_is_a_row() -> None:
    constants = {v for k, v in vars(p).items() if k.startswith("OP_")}
    assert constants == {o.op for o in OPERATIONS if o.op is not None}


@pytest.mark.parametrize("operation", ROWS)
def test_the_scope_checks_give_the_table_s_scope(operation: Operation) -> None:
    if operation.op is not None:
        assert scope_for_ipc(operation.op) == operation.scope
    for method, path in operation.http:
        concrete = path.replace("{model_id:path}", "org/name")
        assert scope_for_http(method, concrete) == operation.scope
        if "{" not in path:
            assert path in KNOWN_PATHS


def test_what_is_not_in_the_table_needs_admin() -> None:
    # Routes that do not exist get no scope of their own (they once had "models").
    for path in ("/api/remove", "/api/publish", "/api/load/extra", "/v1/models/"):
        assert scope_for_http("POST", path) == "admin"
    assert scope_for_ipc("models.delete") == "admin"


def test_the_http_app_serves_the_table_s_routes(tmp_path: Path) -> None:
    s = settings(tmp_path)
    app = create_app(Service(s, ModelManager(s)), s)
    served = {
        (m, r.path) for r in app.routes if isinstance(r, Route) for m in (r.methods or ()) if m != "HEAD"
    }
    expected = {route for o in OPERATIONS for route in o.http}
    assert served == expected


def test_the_ipc_door_dispatches_the_table_s_ops(tmp_path: Path) -> None:
    s = settings(tmp_path)
    door = IpcServer(Service(s, ModelManager(s)), s)
    # cancel is handled by the receive loop itself; every other op is dispatched from the table.
    assert set(door._ops) == {o.op for o in OPERATIONS if o.op is not None} - {p.OP_CANCEL}
