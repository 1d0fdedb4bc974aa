"""TLS on the HTTP door of a real ``hfd serve``: the official ``openai`` client trusting a test
CA gets answers, plain HTTP gets none, SIGHUP swaps the certificate for the next handshake, and
plain HTTP beyond loopback is refused at start-up."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from support.daemon import start_daemon, write_config
from support.tls import make_ca

pytestmark = pytest.mark.timeout(180)


def peer_cert(address: str, ca: Path) -> bytes:
    """The DER certificate a new handshake with the door presents."""
    host, port = address.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((host, int(port)), timeout=15) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_tls_door_serves_the_openai_client_and_reloads_its_certificate_on_sighup(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    first = ca.issue(cert, key, common_name="first")
    extra = f"[http]\ntls_cert = {str(cert)!r}\ntls_key = {str(key)!r}\n"
    daemon = start_daemon(tmp_path / "d", {}, extra_config=extra)
    try:
        assert daemon.http.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(ca.path))
        with httpx.Client(verify=trust, timeout=30) as http:
            client = openai.OpenAI(base_url=daemon.http + "/v1", api_key="unused", http_client=http)
            assert client.models.list().data == []
            with pytest.raises(openai.NotFoundError):
                client.embeddings.create(model="nope", input="hello")
        # Not trusted without the CA, and no answer at all in plain HTTP.
        with pytest.raises(httpx.ConnectError):
            httpx.get(daemon.http + "/health", timeout=15)
        with pytest.raises(httpx.TransportError):
            httpx.get(daemon.http.replace("https://", "http://") + "/health", timeout=15)
        assert peer_cert(daemon.http, ca.path) == first

        second = ca.issue(cert, key, common_name="second")
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_logged("TLS certificate reloaded"), "\n".join(daemon.output[-20:])
        assert peer_cert(daemon.http, ca.path) == second
        assert httpx.get(daemon.http + "/health", verify=trust, timeout=15).json()["status"] == "ok"

        # A broken pair keeps the working certificate serving.
        key.write_text("not a key")
        daemon.signal(signal.SIGHUP)
        assert daemon.wait_logged("TLS certificate not reloaded"), "\n".join(daemon.output[-20:])
        assert peer_cert(daemon.http, ca.path) == second
    finally:
        assert daemon.stop() == 0, "\n".join(daemon.output[-40:])


def serve_once(tmp_path: Path, extra: str, *args: str) -> subprocess.CompletedProcess[str]:
    config = write_config(tmp_path / "config.toml", {}, extra)
    cmd = [sys.executable, "-m", "hfd", "serve", "--config", str(config), "--state-dir", str(tmp_path / "s")]
    cmd += ["--cache-dir", str(tmp_path / "c"), "--runtime-dir", str(tmp_path / "r"), "--log-format", "json"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120)


def test_plain_http_beyond_loopback_is_refused_at_start(tmp_path: Path) -> None:
    # The refusal comes before anything binds: this never listens on the LAN.
    done = serve_once(tmp_path, "", "--http-host", "0.0.0.0", "--auth-required", "false", "--http-port", "0")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no TLS" in done.stderr and "allow_plaintext" in done.stderr
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert any(r["msg"].startswith("refusing plain HTTP beyond loopback") for r in logged)
