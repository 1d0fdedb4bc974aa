"""The daemon process as a whole: ready only when both doors listen, lazy loading, graceful
shutdown on SIGTERM (in-flight work finishes, the socket file goes, exit 0)."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from support.daemon import start_daemon
from support.models import tiny_llama

pytestmark = pytest.mark.timeout(180)


def ipc_health(endpoint: str) -> dict[str, object]:
    from hfd.client import Client

    with Client(endpoint, timeout=10) as client:
        return client.health()  # type: ignore[no-any-return]


def test_ready_means_both_doors_listen_and_models_load_lazily(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, {"chat": tiny_llama()})
    try:
        # Right at the ready line, without retries, both doors answer.
        assert httpx.get(d.http + "/health", timeout=5).json()["status"] == "ok"
        assert ipc_health(d.ipc)["status"] == "ok"
        mode = stat.S_IMODE(d.ipc_path.stat().st_mode)
        assert stat.S_ISSOCK(d.ipc_path.stat().st_mode) and mode == 0o600
        # Nothing is loaded until a request needs it.
        assert httpx.get(d.http + "/api/ps", timeout=5).json()["models"] == []
        body = {"model": "chat", "prompt": "hello", "max_tokens": 3, "temperature": 0}
        r = httpx.post(d.base_url + "/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
        loaded = httpx.get(d.http + "/api/ps", timeout=5).json()["models"]
        assert [m["name"] for m in loaded] == ["chat"]
    finally:
        assert d.stop() == 0


def test_sigterm_lets_in_flight_stream_finish(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, {"chat": tiny_llama()}, args=["--grace-period", "30"])
    got_first = threading.Event()
    result: dict[str, object] = {}

    def stream() -> None:
        body = {
            "model": "chat",
            "messages": [{"role": "user", "content": "tell me a story"}],
            "max_tokens": 60,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
        }
        chunks = []
        with httpx.stream("POST", d.base_url + "/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    result["done"] = True
                    break
                chunk = json.loads(data)
                chunks.append(chunk)
                if any(c["delta"].get("content") for c in chunk.get("choices", [])):
                    got_first.set()
        result["finish"] = [
            c["finish_reason"] for ch in chunks for c in ch["choices"] if c.get("finish_reason")
        ]

    try:
        # Load the model first so the stream is in flight when the signal lands.
        httpx.post(
            d.base_url + "/completions", json={"model": "chat", "prompt": "x", "max_tokens": 1}, timeout=60
        )
        t = threading.Thread(target=stream)
        t.start()
        assert got_first.wait(60), "the stream never produced a token"
        d.signal(signal.SIGTERM)
        t.join(90)
        assert result.get("done") is True, result
        assert result["finish"] == ["length"]
        assert d.wait(60) == 0
        assert not d.ipc_path.exists(), "the IPC socket file must be removed on shutdown"
    finally:
        d.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(d.http + "/health", timeout=2)


def test_bad_config_exits_with_a_message(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[http]\nport = 'x'\n")
    proc = subprocess.run(
        [sys.executable, "-m", "hfd", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "http_port" in proc.stderr
