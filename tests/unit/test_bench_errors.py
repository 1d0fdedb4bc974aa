"""A benchmark's failed request is recorded with the transport error under the SDK's: "Connection
error." alone cannot tell a server closing a kept-alive connection from a refused connect."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from bench_lib.load import describe_error  # noqa: E402


class APIConnectionError(Exception):
    pass


def test_a_wrapped_transport_error_is_named() -> None:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as exc:
            raise APIConnectionError("Connection error.") from exc
    except APIConnectionError as exc:
        text = describe_error(exc)
    assert (
        text
        == "APIConnectionError: Connection error. <- ConnectionResetError: [Errno 104] Connection reset by peer"
    )


def test_a_plain_error_and_a_cycle_stay_short() -> None:
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a  # a chain that loops is cut after three causes
    assert describe_error(a).count("<-") == 3


class RemoteProtocolError(Exception):  # httpx's, by name: the SDKs ship their own fork of httpx
    pass


def _wrapped(message: str) -> APIConnectionError:
    try:
        try:
            raise RemoteProtocolError(message)
        except RemoteProtocolError as exc:
            raise APIConnectionError("Connection error.") from exc
    except APIConnectionError as exc:
        return exc


def test_only_a_request_the_server_never_answered_is_sent_again() -> None:
    import asyncio

    from bench_lib.load import Sample, closed_loop, stale_connection

    stale = _wrapped("Server disconnected without sending a response.")
    assert stale_connection(stale)
    assert not stale_connection(_wrapped("peer closed connection without sending complete message body"))
    assert not stale_connection(ValueError("Server disconnected without sending a response."))

    failures = [stale, None, _wrapped("incomplete chunked read"), None]

    async def request() -> Sample:
        failure = failures.pop(0)
        if failure is not None:
            raise failure
        return Sample(latency=0.01, units=1)

    level = asyncio.run(closed_loop("door", 1, 3, request))
    # The stale try is sent again and served; the broken stream is an error; the third is served.
    assert len(level.samples) == 2 and len(level.errors) == 1 and len(level.retries) == 1
    assert level.summary("tokens")["retried_stale_connections"] == 1
