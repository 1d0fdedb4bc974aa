"""The Responses API's rows of the operation table: on both doors, with the inference scope and
a method in both clients, answered by one implementation (``openai_responses.service``) that the
HTTP routes call too: a response stored through one door is read, listed and deleted through
the other, and the errors (code, param) are the same. No model: nothing here generates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from starlette.testclient import TestClient

from hfd.client import protocol as p
from hfd.client.errors import Forbidden, InvalidRequest, NotFound
from hfd.daemon.access.auth import Principal, scope_for_http, scope_for_ipc
from hfd.daemon.access.keys import SCOPE_INFERENCE, SCOPE_MODELS
from hfd.daemon.http.app import create_app
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.openai_responses import service as responses_service
from hfd.daemon.operations import BY_OP
from hfd.daemon.schema import parse
from hfd.daemon.service import Service
from hfd.daemon.settings import load_settings

OPS = {
    p.OP_RESPONSES_CREATE: ("POST", "/v1/responses", responses_service.create),
    p.OP_RESPONSES_RETRIEVE: ("GET", "/v1/responses/{response_id}", responses_service.retrieve),
    p.OP_RESPONSES_DELETE: ("DELETE", "/v1/responses/{response_id}", responses_service.delete),
    p.OP_RESPONSES_INPUT_ITEMS: (
        "GET",
        "/v1/responses/{response_id}/input_items",
        responses_service.input_items,
    ),
}
RID = "resp_" + "a" * 32


@pytest.fixture
def service(tmp_path: Path) -> Service:
    s = load_settings(
        cli={"state_dir": tmp_path / "state", "runtime_dir": tmp_path / "run", "usage_enabled": False},
        environ={},
    )
    return Service(s, ModelManager(s))


def ipc(service: Service, op: str, body: dict[str, Any]) -> Any:
    """What the IPC door does with a request: parse by the row, then call it."""
    row = BY_OP[op]
    assert row.call is not None
    req = parse(row.request, body) if row.request is not None else body

    async def go() -> Any:
        if row.kind == "progress":
            return await row.call(service, req, None)
        return await row.call(service, req)

    return anyio.run(go)


@pytest.mark.parametrize("op", sorted(OPS))
def test_rows_are_on_both_doors_with_the_inference_scope(op: str) -> None:
    row = BY_OP[op]
    method, path, call = OPS[op]
    assert row.http == ((method, path),) and row.call is call and row.client == op
    assert scope_for_ipc(op) == SCOPE_INFERENCE == scope_for_http(method, path.replace("{response_id}", RID))
    with pytest.raises(Forbidden):
        Principal("key", "k", frozenset({SCOPE_MODELS})).require(scope_for_ipc(op))
    Principal("key", "k", frozenset({SCOPE_INFERENCE})).require(scope_for_ipc(op))
    assert BY_OP[p.OP_RESPONSES_CREATE].kind == "progress"  # IPC: events, then the response


def test_one_store_for_both_doors(service: Service) -> None:
    record = {
        "response": {"id": RID, "object": "response", "output": []},
        "input": [{"type": "message", "role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        "conversation": [],
    }
    responses_service.store_for(service).put(RID, record)
    with TestClient(create_app(service, service.settings)) as web:
        assert (
            ipc(service, p.OP_RESPONSES_RETRIEVE, {"response_id": RID})
            == web.get(f"/v1/responses/{RID}").json()
        )
        listed = ipc(service, p.OP_RESPONSES_INPUT_ITEMS, {"response_id": RID, "order": "asc"})
        assert [i["content"] for i in listed["data"]] == ["a", "b"] and listed["first_id"] == RID + "_in0"
        assert web.get(f"/v1/responses/{RID}/input_items").json()["data"] == listed["data"][::-1]
        assert ipc(service, p.OP_RESPONSES_DELETE, {"response_id": RID})["deleted"] is True
        gone = web.get(f"/v1/responses/{RID}")
        assert gone.status_code == 404 and gone.json()["error"]["param"] == "response_id"
        with pytest.raises(NotFound):
            ipc(service, p.OP_RESPONSES_DELETE, {"response_id": RID})
        # The same refusal on both doors, before any model is asked for.
        body = {"model": "m", "input": "hi", "previous_response_id": RID, "stream": True}
        with pytest.raises(InvalidRequest) as info:
            ipc(service, p.OP_RESPONSES_CREATE, body)
        refused = web.post("/v1/responses", json=body)
        assert refused.status_code == 400
        err = refused.json()["error"]
        assert (
            (err["code"], err["param"])
            == (info.value.code, info.value.param)
            == (
                "invalid_request",
                "previous_response_id",
            )
        )
        bad = web.get(f"/v1/responses/{RID}/input_items?order=sideways")
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "order"
    with pytest.raises(InvalidRequest) as missing:
        ipc(service, p.OP_RESPONSES_RETRIEVE, {})
    assert missing.value.param == "response_id"
