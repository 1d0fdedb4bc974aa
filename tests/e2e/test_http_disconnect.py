"""An HTTP embeddings client that hangs up cancels its request: the route stops waiting for
it (499 in the metrics, a log line) and the next request is not stuck behind its work."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

pytestmark = pytest.mark.timeout(180)


def test_an_embeddings_client_that_hangs_up_cancels_its_request(doors) -> None:  # type: ignore[no-untyped-def]
    texts = [f"sentence {i} " + "about the weather in the north " * 12 for i in range(120)]
    body = json.dumps({"model": doors.MINILM, "input": texts, "cache": False}).encode()
    assert len(body) < doors.BODY_LIMIT
    httpx.post(doors.base_url + "/embeddings", json={"model": doors.MINILM, "input": "warm"}, timeout=120)
    host, port = doors.http.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    head = f"POST /v1/embeddings HTTP/1.1\r\nHost: hfd\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    sock.sendall(head.encode() + body)
    deadline = time.monotonic() + 30
    while doors.scheduler(doors.MINILM).get("active", 0) == 0:  # computing now
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sock.close()
    assert doors.wait_logged("client disconnected; embeddings cancelled")
    r = httpx.post(doors.base_url + "/embeddings", json={"model": doors.EMBED, "input": "next"}, timeout=60)
    assert r.status_code == 200
