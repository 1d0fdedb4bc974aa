"""The one table of operations (``hfd.daemon.operations``) is complete, and the doors and the
scope checks are read from it: every operation has a scope, an HTTP route or an IPC op, and a
method in both ``hfd.client.Client`` and ``AsyncClient`` (or a reason why not); the HTTP app
serves exactly the table's routes, the IPC door dispatches exactly its ops, and the scopes the
access checks give are the table's."""

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
