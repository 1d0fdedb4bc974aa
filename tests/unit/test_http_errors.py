"""The one error mapping of the HTTP door: status, OpenAI envelope, headers, and no leak of
unexpected exceptions."""

from __future__ import annotations

import json
import logging

import pytest
from starlette.exceptions import HTTPException

from hfd.client import errors
from hfd.daemon.http.errors import as_hfd_error, error_response, sse_error_event


@pytest.mark.parametrize(
    ("exc", "status", "code", "etype"),
    [
        (errors.InvalidJSON("bad"), 400, "invalid_json", "invalid_request_error"),
        (
            errors.ContextLengthExceeded("long", param="messages"),
            400,
            "context_length_exceeded",
            "invalid_request_error",
        ),
        (errors.ValidationFailed("wrong"), 400, "validation_error", "invalid_request_error"),
        (errors.PayloadTooLarge("big"), 413, "payload_too_large", "invalid_request_error"),
        (errors.ModelNotFound("who"), 404, "model_not_found", "invalid_request_error"),
        (errors.Unauthorized("key"), 401, "unauthorized", "authentication_error"),
        (errors.Overloaded("busy", retry_after=1.2), 429, "overloaded", "rate_limit_error"),
        (errors.ModelUnavailable("down", retry_after=30), 503, "model_unavailable", "server_error"),
        (errors.InsufficientMemory("ram"), 507, "insufficient_memory", "server_error"),
        (errors.NotSupported("no"), 501, "not_supported", "server_error"),
    ],
)
def test_errors_map_to_their_status_and_the_openai_envelope(
    exc: errors.HfdError, status: int, code: str, etype: str
) -> None:
    response = error_response(exc)
    assert response.status_code == status
    body = json.loads(bytes(response.body))
    assert set(body) == {"error"}
    inner = body["error"]
    assert inner["code"] == code and inner["type"] == etype and inner["message"] == exc.message
    assert inner["param"] == exc.param


def test_retry_after_is_rounded_up_to_whole_seconds() -> None:
    assert error_response(errors.Overloaded("busy", retry_after=1.2)).headers["retry-after"] == "2"
    assert error_response(errors.RateLimited("slow down", retry_after=3)).headers["retry-after"] == "3"
    assert "retry-after" not in error_response(errors.ModelNotFound("x")).headers


def test_router_exceptions_become_envelopes() -> None:
    not_found = as_hfd_error(HTTPException(404), method="GET", path="/nope")
    assert isinstance(not_found, errors.NotFound) and "/nope" in not_found.message
    wrong = error_response(HTTPException(405, headers={"Allow": "POST"}), method="GET", path="/v1/embeddings")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert json.loads(bytes(wrong.body))["error"]["code"] == "method_not_allowed"


def test_unexpected_exceptions_are_logged_and_hidden(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="hfd.daemon.http.errors"):
        response = error_response(RuntimeError("secret internals"), method="POST", path="/v1/x")
    assert response.status_code == 500
    body = json.loads(bytes(response.body))
    assert body["error"]["code"] == "internal_error"
    assert "secret" not in body["error"]["message"]
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


def test_error_inside_a_stream_is_one_sse_event_with_the_envelope() -> None:
    event = sse_error_event(errors.Cancelled("model unloaded"))
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[len(b"data: ") :])["error"]["code"] == "cancelled"
