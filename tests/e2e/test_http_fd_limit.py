"""The issue's slow-client attack on a real ``hfd serve`` started with a terminal's open-file
limit: more connections that never finish their headers than the process has descriptors,
and ``/health`` still answers, with no flood of accept tracebacks in the log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import pytest
from support.daemon import start_daemon

pytestmark = pytest.mark.timeout(180)


def test_health_answers_with_more_slow_connections_than_descriptors(tmp_path: Path) -> None:
    hard = 1024
    daemon = start_daemon(tmp_path, {}, nofile=(256, hard), args=["--http-header-timeout", "120"])
    held: list[socket.socket] = []
    try:
        records = [json.loads(line) for line in daemon.output if line.startswith("{")]
        limit = next(r for r in records if r["msg"] == "open-file limit")
        assert (limit["nofile_soft_was"], limit["nofile_soft"], limit["nofile_hard"]) == (256, hard, hard)

        host, port = daemon.http.removeprefix("http://").rsplit(":", 1)
        for _ in range(hard + 200):
            sock = socket.create_connection((host, int(port)), timeout=15)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: hfd\r\nX-Never-Ends: ")
            held.append(sock)
        r = httpx.get(daemon.http + "/health", timeout=30)
        assert r.status_code == 200
        accept_lines = [line for line in daemon.output if "out of system resource" in line]
        assert len(accept_lines) <= 1
    finally:
        for sock in held:
            sock.close()
        assert daemon.stop() == 0, "\n".join(daemon.output[-40:])
