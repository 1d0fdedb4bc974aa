"""Slow and vanished clients against the real HTTP door on a real socket: header and body
timeouts (408), the connection cap (reclaim, then 503), deeply nested JSON (400, nothing
leaked), a log line for every dropped request, and the loop's accept errors rate-limited."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from support.http_door import host_port, in_flight, make_settings, serving

from hfd.daemon.http.conn import THROTTLED, AcceptErrors

pytestmark = pytest.mark.timeout(120)

PARTIAL_HEADERS = b"GET /health HTTP/1.1\r\nHost: hfd\r\nX-Slow: "


def connect(address: str) -> socket.socket:
    sock = socket.create_connection(host_port(address), timeout=15)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (bounded by the socket timeout)."""
    out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return out
        out += chunk


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def body_of(raw: bytes) -> dict[str, object]:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


@contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for s in held:
            s.close()


def test_headers_that_never_finish_get_408_and_the_connection_closes(tmp_path: Path) -> None:
    with serving(make_settings(tmp_path, http_header_timeout=0.3)) as (address, _), sockets() as held:
        sock = connect(address)
        held.append(sock)
        sock.sendall(PARTIAL_HEADERS)
        raw = read_all(sock)
        assert status_of(raw) == 408
        assert body_of(raw)["error"]["code"] == "request_timeout"  # type: ignore[index]
        # A connection that sends nothing at all is closed too.
        silent = connect(address)
        held.append(silent)
        assert status_of(read_all(silent)) == 408


def test_a_body_shorter_than_its_content_length_gets_408(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, http_body_timeout=0.3)
    with serving(settings) as (address, _), sockets() as held:
        for path in ("/v1/embeddings", "/api/load"):
            sock = connect(address)
            held.append(sock)
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: hfd\r\nContent-Type: application/json\r\n"
                "Content-Length: 100\r\n\r\n".encode()
                + b'{"model": "m", '
            )
            raw = read_all(sock)
            assert status_of(raw) == 408, raw
            assert b"connection: close" in raw.lower()
            assert body_of(raw)["error"]["code"] == "request_timeout"  # type: ignore[index]
        assert in_flight(address) == 1  # only the scrape itself


def test_a_body_dripped_just_within_each_timeout_gets_408(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, http_body_timeout=0.5)
    with serving(settings) as (address, _), sockets() as held:
        sock = connect(address)
        held.append(sock)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: hfd\r\nContent-Length: 100000\r\n\r\n")
        sock.settimeout(0.1)  # one byte per 0.1 s: never a pause of 0.5 s
        raw = b""
        for _ in range(600):
            try:
                sock.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            raw += chunk
            if not chunk or b"\r\n\r\n" in raw:
                break
        sock.settimeout(15)
        raw += read_all(sock)
        assert status_of(raw) == 408, raw
        assert b"too slowly" in raw


def test_slow_connections_at_the_cap_are_reclaimed_and_health_still_answers(tmp_path: Path) -> None:
    cap = 16
    settings = make_settings(tmp_path, http_max_connections=cap, http_header_timeout=300.0)
    with serving(settings) as (address, _), sockets() as held:
        for _ in range(cap * 5):
            sock = connect(address)
            sock.sendall(PARTIAL_HEADERS)
            held.append(sock)
        r = httpx.get(address + "/health", timeout=15)
        assert r.status_code == 200
        # The oldest slow connections made room: closed (with a 408, or reset when the
        # server closed before it had read all they sent).
        for sock in held[: cap * 4 - 1]:
            try:
                raw = read_all(sock)
            except ConnectionResetError:
                continue
            assert not raw or status_of(raw) == 408


def test_beyond_the_cap_of_busy_connections_new_ones_get_503(tmp_path: Path) -> None:
    cap = 4
    settings = make_settings(tmp_path, http_max_connections=cap, http_body_timeout=300.0)
    with serving(settings) as (address, _), sockets() as held:
        # Busy: each has sent its headers and part of its body, so none may be reclaimed.
        for _ in range(cap):
            sock = connect(address)
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: hfd\r\nContent-Length: 50\r\n\r\n{")
            held.append(sock)
        r = httpx.get(address + "/health", timeout=15)
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "overloaded"
        held.pop().close()
        for _ in range(200):  # the closed connection leaves the count on the server's next turn
            r = httpx.get(address + "/health", timeout=15)
            if r.status_code == 200:
                break
        assert r.status_code == 200


def test_deeply_nested_json_is_400_and_leaks_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = b"[" * 100_000
    with serving(make_settings(tmp_path)) as (address, _):
        for path in ("/v1/chat/completions", "/v1/embeddings", "/api/load"):
            r = httpx.post(
                address + path, content=body, headers={"content-type": "application/json"}, timeout=15
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["type"] == "invalid_request_error"
            assert r.json()["error"]["code"] == "invalid_json"
        obj = b'{"model": "m", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        r = httpx.post(address + "/v1/embeddings", content=obj, timeout=15)
        assert r.status_code == 400, r.text
        assert in_flight(address) == 1  # only the scrape itself
    finished = [
        r for r in caplog.records if r.getMessage() == "request" and getattr(r, "status", None) == 400
    ]
    assert len(finished) == 4  # each request was finished: metrics and its usage row
    assert not [r for r in caplog.records if r.exc_info], "no tracebacks"


def test_every_dropped_request_leaves_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    THROTTLED._last.clear()  # earlier tests' lines must not hold this one back
    with serving(make_settings(tmp_path, http_body_timeout=300.0)) as (address, _):
        # A client that goes away in the middle of its body.
        sock = connect(address)
        sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: hfd\r\nContent-Length: 50\r\n\r\n{")
        sock.close()
        # Malformed requests: answered 400, logged in one throttled line with a count.
        for _ in range(20):
            bad = connect(address)
            bad.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert status_of(read_all(bad)) == 400
            bad.close()
        assert httpx.get(address + "/health", timeout=15).status_code == 200
    dropped = [r for r in caplog.records if r.getMessage().startswith("http request dropped")]
    lost = [r for r in dropped if "before the response was complete" in r.getMessage()]
    assert lost and lost[0].path == "/v1/embeddings" and lost[0].request_id  # type: ignore[attr-defined]
    assert lost[0].reason == "the client closed the connection"  # type: ignore[attr-defined]
    malformed = [r for r in dropped if r.getMessage() == "http request dropped: malformed HTTP request"]
    assert len(malformed) == 1 and malformed[0].count == 1  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.getMessage() == "Invalid HTTP request received."]


def test_accept_errors_are_logged_once_per_interval_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    loop = asyncio.new_event_loop()
    other: list[str] = []
    loop.set_exception_handler(lambda _loop, ctx: other.append(ctx["message"]))
    handler = AcceptErrors(interval=10.0, clock=lambda: now[0])
    handler.install(loop)
    try:
        for i in range(6000):
            now[0] = i * 0.001  # 6000 failures in 6 s
            loop.call_exception_handler(
                {
                    "message": "socket.accept() out of system resource",
                    "exception": OSError(24, "Too many open files"),
                }
            )
        now[0] = 10.5
        loop.call_exception_handler({"message": "socket.accept() out of system resource"})
        loop.call_exception_handler({"message": "something else"})
    finally:
        handler.uninstall()
        loop.close()
    lines = [r for r in caplog.records if "cannot accept" in r.getMessage()]
    assert len(lines) == 2
    assert lines[1].failures_since_last_report == 6000  # type: ignore[attr-defined]
    assert lines[1].failures_total == 6001  # type: ignore[attr-defined]
    assert other == ["something else"]  # other reports reach the handler that was there
