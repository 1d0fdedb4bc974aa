"""Who may use a real `hfd serve`: API keys over HTTP with the official `openai` client (401,
403, 429 + Retry-After, revocation by the CLI taking effect at once), the daemon refusing to
start when keys are required and none exist, the IPC peer check against clients running as
other users, and CURVE on the IPC door's TCP endpoint."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import openai
import pytest
import zmq
import zmq.auth
from support.daemon import run_hfd, start_daemon
from support.models import tiny_bert, tiny_llama

from hfd.client.protocol import (
    OP_EMBEDDINGS,
    OP_HEALTH,
    OP_MODELS_LOAD,
    Request,
    decode_reply,
    encode_request,
)
from hfd.daemon.access.keys import KeyStore

pytestmark = pytest.mark.timeout(300)


hfd = run_hfd


def oai(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=180)


def test_api_keys_over_http(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = KeyStore(state)
    _, full = store.create("full", scopes="inference")
    _, emb_only = store.create("emb-only", models=["emb"])
    _, limited = store.create("limited", rpm=2)
    d = start_daemon(tmp_path, {"emb": tiny_bert(), "chat": tiny_llama()}, args=["--auth-required", "true"])
    try:
        # No key, a placeholder key, a made-up hfd key: 401.
        for key in ("sk-no-key", "hfd-00000000-nope"):
            with pytest.raises(openai.AuthenticationError):
                oai(d.base_url, key).models.list()
        r = httpx.get(d.base_url + "/models", timeout=10)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["code"] == "unauthorized"
        # Probes stay open.
        assert httpx.get(d.http + "/health", timeout=10).status_code == 200

        # A key limited to one model: that model works, another one is 403.
        client = oai(d.base_url, emb_only)
        assert len(client.embeddings.create(model="emb", input=["hello"]).data[0].embedding) > 0
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.completions.create(model="chat", prompt="hi", max_tokens=2)
        assert denied.value.body["code"] == "forbidden"  # type: ignore[index]
        # Without the models scope: loading is 403 too.
        r = httpx.post(
            d.http + "/api/load",
            json={"model": "emb"},
            headers={"Authorization": f"Bearer {full}"},
            timeout=30,
        )
        assert r.status_code == 403

        # Rate limit: two requests a minute, the third is 429 with Retry-After.
        client = oai(d.base_url, limited)
        client.models.list()
        client.models.list()
        with pytest.raises(openai.RateLimitError) as limited_err:
            client.models.list()
        retry_after = int(limited_err.value.response.headers["retry-after"])
        assert 1 <= retry_after <= 60
        assert limited_err.value.body["code"] == "rate_limited"  # type: ignore[index]

        # Revoked by the CLI (another process): the very next request is 401.
        client = oai(d.base_url, full)
        assert client.embeddings.create(model="emb", input=["x"]).model == "emb"
        out = hfd("keys", "revoke", "full", "--state-dir", str(state))
        assert out.returncode == 0, out.stderr
        with pytest.raises(openai.AuthenticationError):
            client.embeddings.create(model="emb", input=["x"])
        # A key created while the daemon runs works at once.
        created = hfd("keys", "create", "--name", "new", "--state-dir", str(state))
        assert created.returncode == 0, created.stderr
        assert oai(d.base_url, created.stdout.strip()).models.list().data
    finally:
        assert d.stop() == 0


def test_keys_required_but_none_refuses_to_start(tmp_path: Path) -> None:
    out = hfd(
        "serve",
        *("--auth-required", "true", "--http-port", "0"),
        *("--state-dir", str(tmp_path / "state"), "--runtime-dir", str(tmp_path / "run")),
    )
    assert out.returncode != 0
    assert "hfd keys create" in out.stderr


# ----------------------------------------------------------------------------- IPC

CLIENT = textwrap.dedent(
    """
    import sys, zmq
    from hfd.client.protocol import OP_HEALTH, Request, decode_reply, encode_request
    sock = zmq.Context().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(sys.argv[1])
    sock.send_multipart(encode_request(Request(id="p1", op=OP_HEALTH, body={})))
    print(decode_reply(sock.recv_multipart()).body["status"] if sock.poll(3000) else "no reply")
    """
)


def run_as(uid: int, endpoint: str) -> str:
    cmd = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        sys.executable,
        "-c",
        CLIENT,
        endpoint,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="running clients as other users needs root"
)
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_PEERCRED via libzmq on Linux")
def test_ipc_peer_check_refuses_users_not_allowed(tmp_path: Path) -> None:
    # A socket anyone may open, in a directory anyone may enter: only the peer check is left.
    sockdir = Path("/tmp") / f"hfd-peer-{uuid.uuid4().hex[:8]}"
    sockdir.mkdir(mode=0o755)
    try:
        d = start_daemon(
            tmp_path,
            {},
            args=[
                "--ipc-path",
                str(sockdir / "hfd.sock"),
                "--ipc-mode",
                "0o666",
                "--ipc-allowed-users",
                "65534",
            ],
        )
        try:
            assert run_as(65534, d.ipc) == "ok"  # allowed by uid
            assert run_as(65533, d.ipc) == "no reply"  # not allowed: disconnected, never answered
            assert run_as(0, d.ipc) == "ok"  # root
            metrics = httpx.get(d.http + "/metrics", timeout=10).text
            refused = [
                line for line in metrics.splitlines() if line.startswith("hfd_ipc_connections_refused_total")
            ]
            assert refused and float(refused[0].split()[-1]) >= 1
        finally:
            assert d.stop() == 0
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def curve_request(
    endpoint: str,
    req: Request,
    keys: tuple[bytes, bytes | None] | None,
    server_public: bytes,
    wait: float = 3.0,
) -> dict[str, object] | None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        if keys is not None:
            sock.curve_publickey, sock.curve_secretkey = keys
            sock.curve_serverkey = server_public
        sock.connect(endpoint)
        sock.send_multipart(encode_request(req))
        if not sock.poll(int(wait * 1000)):
            return None
        reply = decode_reply(sock.recv_multipart())
        return {"kind": reply.kind, **reply.body}
    finally:
        sock.close()


def test_curve_over_tcp(tmp_path: Path) -> None:
    keys = tmp_path / "curve"
    assert hfd("keys", "curve", "--out", str(keys), "--name", "server").returncode == 0
    assert hfd("keys", "curve", "--out", str(keys / "a"), "--name", "alice").returncode == 0
    assert hfd("keys", "curve", "--out", str(keys / "m"), "--name", "mallory").returncode == 0
    clients = keys / "clients"
    clients.mkdir()
    shutil.copy(keys / "a" / "alice.key", clients / "alice.key")
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    d = start_daemon(
        tmp_path,
        {"emb": tiny_bert()},
        args=[
            "--ipc-tcp",
            endpoint,
            "--ipc-curve-secret-key",
            str(keys / "server.key_secret"),
            "--ipc-curve-clients-dir",
            str(clients),
        ],
    )
    try:
        server_public, _ = zmq.auth.load_certificate(str(keys / "server.key"))
        alice = zmq.auth.load_certificate(str(keys / "a" / "alice.key_secret"))
        mallory = zmq.auth.load_certificate(str(keys / "m" / "mallory.key_secret"))
        health = Request(id="h", op=OP_HEALTH, body={})
        assert curve_request(endpoint, health, alice, server_public)["status"] == "ok"  # type: ignore[index]
        assert curve_request(endpoint, health, mallory, server_public) is None  # not in the directory
        assert curve_request(endpoint, health, None, server_public) is None  # no CURVE at all
        # Allowed clients get the inference scope only (ipc_tcp_scopes).
        emb_req = Request(id="e", op=OP_EMBEDDINGS, body={"model": "emb", "input": ["hi"]})
        emb = curve_request(endpoint, emb_req, alice, server_public, wait=120)  # loads the model
        assert emb is not None and emb["kind"] == "result"
        load = curve_request(
            endpoint, Request(id="l", op=OP_MODELS_LOAD, body={"model": "emb"}), alice, server_public
        )
        assert load is not None and load["kind"] == "error" and load["code"] == "forbidden"
        # Allowing a client needs no restart: the directory is re-read.
        shutil.copy(keys / "m" / "mallory.key", clients / "mallory.key")
        assert curve_request(endpoint, health, mallory, server_public)["status"] == "ok"  # type: ignore[index]
    finally:
        assert d.stop() == 0


def test_tcp_without_curve_is_refused(tmp_path: Path) -> None:
    out = hfd(
        "serve",
        "--ipc-tcp",
        "tcp://127.0.0.1:1",
        "--state-dir",
        str(tmp_path),
        "--runtime-dir",
        str(tmp_path / "r"),
    )
    assert out.returncode == 2 and "CURVE" in out.stderr
