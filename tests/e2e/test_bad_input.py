"""Bad input at both doors of a real ``hfd serve``: each gets the right code and status, and
after each the daemon still serves a normal request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import msgpack
import pytest
import zmq

from hfd.client.protocol import PROTOCOL_VERSION, Reply, decode_reply, packb

if TYPE_CHECKING:
    from conftest import Doors

pytestmark = pytest.mark.timeout(300)

CHAT, EMBED, CONTEXT, BODY_LIMIT = "chat", "emb", 256, 64 * 1024
MESSAGES = [{"role": "user", "content": "hi"}]
TOO_LONG = "word " * (CONTEXT + 50)


@pytest.fixture(scope="module", autouse=True)
def _the_shared_daemon(doors: Doors) -> None:
    """These tests run on the shared daemon (the ``http`` and ``dealer`` fixtures' default)."""
    assert (doors.CHAT, doors.EMBED, doors.CONTEXT, doors.BODY_LIMIT) == (CHAT, EMBED, CONTEXT, BODY_LIMIT)


def still_serving(http: httpx.Client, dealer: zmq.Socket[bytes]) -> None:
    """A normal request at each door succeeds."""
    r = http.post("/v1/completions", json={"model": CHAT, "prompt": "Hello", "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] >= 1
    dealer.send_multipart(
        [
            packb(
                {
                    "v": PROTOCOL_VERSION,
                    "id": "ok",
                    "op": "embeddings.create",
                    "body": {"model": EMBED, "input": ["fine"]},
                }
            )
        ]
    )
    reply = next_reply(dealer)
    assert (reply.id, reply.kind, reply.body["shape"]) == ("ok", "result", [1, 32])


def next_reply(dealer: zmq.Socket[bytes], timeout: float = 120.0) -> Reply:
    assert dealer.poll(int(timeout * 1000)), "no reply"
    return decode_reply(dealer.recv_multipart())


def request(rid: str, op: Any, body: Any) -> list[bytes]:
    return [packb({"v": PROTOCOL_VERSION, "id": rid, "op": op, "body": body})]


# ----------------------------------------------------------------------------- IPC


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param([b"\xc1 not msgpack at all"], id="malformed-msgpack"),
        pytest.param([packb(["a", "list"])], id="header-not-a-map"),
        pytest.param([packb({"v": PROTOCOL_VERSION, "op": "health"})], id="no-id"),
        pytest.param([msgpack.packb({0: "int keys"})], id="int-keys"),
    ],
)
def test_ipc_unreadable_messages_are_dropped(
    frames: list[bytes], http: httpx.Client, dealer: zmq.Socket[bytes]
) -> None:
    dealer.send_multipart(frames)
    assert not dealer.poll(300)  # nothing can be addressed: no reply
    still_serving(http, dealer)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        pytest.param(request("e1", "models.destroy", {}), "unknown_operation", id="unknown-op"),
        pytest.param([packb({"v": 99, "id": "e1", "op": "health"})], "protocol_error", id="wrong-version"),
        pytest.param(
            request("e1", "chat.completions.create", {"model": CHAT, "messages": "hi"}),
            "validation_error",
            id="messages-not-a-list",
        ),
        pytest.param(
            request(
                "e1", "chat.completions.create", {"model": CHAT, "messages": MESSAGES, "max_tokens": "ten"}
            ),
            "validation_error",
            id="max-tokens-a-string",
        ),
        pytest.param(
            # a map is taken as one input item, and it is not one of the item shapes
            request("e1", "embeddings.create", {"model": EMBED, "input": {"a": 1}}),
            "invalid_request",
            id="input-a-map",
        ),
        pytest.param(
            request("e1", "embeddings.create", {"model": EMBED, "input": [""]}),
            "invalid_request",
            id="empty-input",
        ),
        pytest.param(
            request("e1", "embeddings.create", {"model": "nope", "input": "x"}),
            "model_not_found",
            id="unknown-model",
        ),
        pytest.param(
            request("e1", "completions.create", {"model": CHAT, "prompt": TOO_LONG}),
            "context_length_exceeded",
            id="prompt-too-long",
        ),
        pytest.param(
            request(
                "e1",
                "chat.completions.create",
                {"model": CHAT, "messages": [{"role": "user", "content": TOO_LONG}], "stream": True},
            ),
            "context_length_exceeded",
            id="stream-prompt-too-long",
        ),
    ],
)
def test_ipc_bad_requests_get_an_error_with_a_stable_code(
    frames: list[bytes], code: str, http: httpx.Client, dealer: zmq.Socket[bytes]
) -> None:
    dealer.send_multipart(frames)
    reply = next_reply(dealer)
    assert (reply.id, reply.kind, reply.body["code"]) == ("e1", "error", code), reply.body
    assert reply.body["message"]
    still_serving(http, dealer)


# ----------------------------------------------------------------------------- HTTP


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"])
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        pytest.param(
            "POST",
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [',
            400,
            "invalid_json",
            id="invalid-json",
        ),
        pytest.param("POST", "/v1/embeddings", b"", 400, "invalid_json", id="empty-body"),
        pytest.param(
            "POST",
            "/v1/chat/completions",
            json.dumps({"model": CHAT, "messages": "hi"}).encode(),
            400,
            "validation_error",
            id="wrong-type",
        ),
        pytest.param(
            "POST",
            "/v1/chat/completions",
            json.dumps({"model": CHAT}).encode(),
            400,
            "validation_error",
            id="missing-field",
        ),
        pytest.param(
            "POST",
            "/v1/embeddings",
            json.dumps({"model": "nope", "input": "x"}).encode(),
            404,
            "model_not_found",
            id="unknown-model",
        ),
        pytest.param(
            "POST",
            "/v1/completions",
            json.dumps({"model": CHAT, "prompt": TOO_LONG}).encode(),
            400,
            "context_length_exceeded",
            id="prompt-too-long",
        ),
        pytest.param(
            "POST",
            "/v1/chat/completions",
            json.dumps(
                {"model": CHAT, "messages": [{"role": "user", "content": TOO_LONG}], "stream": True}
            ).encode(),
            400,
            "context_length_exceeded",
            id="stream-prompt-too-long",
        ),
        pytest.param(
            "POST",
            "/v1/embeddings",
            json.dumps({"model": EMBED, "input": "x" * BODY_LIMIT}).encode(),
            413,
            "payload_too_large",
            id="body-too-large",
        ),
        pytest.param("GET", "/v1/nothing-here", b"", 404, "not_found", id="unknown-route"),
        pytest.param("DELETE", "/v1/models", b"", 405, "method_not_allowed", id="wrong-method"),
    ],
)
def test_http_bad_requests(
    method: str,
    path: str,
    content: bytes,
    status: int,
    code: str,
    http: httpx.Client,
    dealer: zmq.Socket[bytes],
) -> None:
    r = http.request(method, path, content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert error_of(r)["code"] == code
    still_serving(http, dealer)


def test_http_chunked_body_over_the_limit(http: httpx.Client, dealer: zmq.Socket[bytes]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "emb", "input": "'
        for _ in range(BODY_LIMIT // 4096 + 2):
            yield b"z" * 4096
        yield b'"}'

    r = http.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
    still_serving(http, dealer)
