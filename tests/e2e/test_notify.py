"""systemd's notify protocol against a real `hfd serve`: a datagram socket stands in for
systemd's NOTIFY_SOCKET (that socket is all systemd offers the service), and the test checks
what systemd relies on: READY=1 only once both doors answer, WATCHDOG=1 more often than
WatchdogSec, STOPPING=1 on SIGTERM, then exit 0."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import zmq
from support.daemon import start_daemon

from hfd.client.protocol import OP_HEALTH, Request, decode_reply, encode_request

pytestmark = pytest.mark.timeout(180)

WATCHDOG_USEC = 600_000  # systemd would restart the service after 0.6 s without a ping


def ipc_health(endpoint: str) -> dict[str, object]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send_multipart(encode_request(Request(id="n1", op=OP_HEALTH, body={})))
        if not sock.poll(5000):
            raise AssertionError("the IPC door did not answer")
        return decode_reply(sock.recv_multipart()).body
    finally:
        sock.close()


class NotifyListener:
    """What systemd would receive, with the time of each message; on READY=1 it probes both
    doors at once (the addresses come from the STATUS= line)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self.probe: dict[str, object] = {}
        self.probed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append((time.monotonic(), fields))
            if fields.get("READY") == "1":
                self._probe(fields.get("STATUS", ""))

    def _probe(self, status: str) -> None:
        addrs = dict(part.split("=", 1) for part in status.split() if "=" in part)
        try:
            self.probe["http"] = httpx.get(addrs["http"] + "/health", timeout=5).json()["status"]
            self.probe["ipc"] = ipc_health(addrs["ipc"])["status"]
        except Exception as exc:  # recorded, asserted by the test
            self.probe["error"] = repr(exc)
        finally:
            self.probed.set()

    def of(self, key: str) -> list[float]:
        return [t for t, f in self.messages if key in f]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    # AF_UNIX paths are short: keep the socket out of pytest's long tmp path.
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"hfd-notify-{uuid.uuid4().hex[:8]}.sock"
    listener = NotifyListener(path)
    try:
        d = start_daemon(tmp_path, {}, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        try:
            assert listener.probed.wait(30), "no READY=1"
            assert listener.probe == {"http": "ok", "ipc": "ok"}, listener.probe
            ready = listener.of("READY")
            assert len(ready) == 1
            assert [f["MAINPID"] for _, f in listener.messages if "READY" in f] == [str(d.proc.pid)]

            time.sleep(2.0)  # a window of several watchdog intervals
            pings = [t for t in listener.of("WATCHDOG") if t >= ready[0]]
            assert len(pings) >= 3, listener.messages
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            # The contract with systemd: never WatchdogSec without a ping.
            assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
            assert all(t >= ready[0] for t in listener.of("WATCHDOG")), "no ping before READY"

            d.signal(signal.SIGTERM)
            assert d.wait(60) == 0
            stopping = listener.of("STOPPING")
            assert len(stopping) == 1 and stopping[0] > ready[0]
        finally:
            d.stop()
    finally:
        listener.close()
        path.unlink(missing_ok=True)
