"""Stats, pulls, keep-alive on load, and CURVE over TCP, through both doors of a real
``hfd serve``: HTTP with httpx, IPC with ``hfd.client`` (sync and async) and the CLI.

The daemon pulls from a local Hub-compatible server on 127.0.0.1 (``support.hub_server``) and
also serves its IPC protocol on a CURVE-protected TCP endpoint on loopback.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import zmq
import zmq.auth
from support.daemon import Daemon, start_daemon
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert

from hfd.client import AsyncClient, Client, PullProgress
from hfd.client.errors import (
    DaemonUnavailable,
    Forbidden,
    HfdError,
    InvalidRequest,
    ModelNotFound,
    Unauthorized,
    ValidationFailed,
)
from hfd.daemon.access.zap import create_keypair
from hfd.daemon.cli import main as cli
from hfd.daemon.settings import load_settings
from hfd.daemon.store import ModelStore

pytestmark = pytest.mark.timeout(300)

EMB = "emb"
REPOS = ("acme/bert-http", "acme/bert-ipc", "acme/bert-async")
# What a pull reports after its download: the export a first load needs (export_on_pull), then
# the engines' measurement where more than one engine can serve the model here.
AFTER_DOWNLOAD = (["done"], ["done", "exporting"], ["done", "exporting", "measuring"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Keys:
    server: Path  # the daemon's public key file
    server_secret: Path
    alice: Path  # an allowed client's secret key file (holds both halves)
    mallory: Path  # a client not in the allowed directory
    clients: Path


@dataclass
class Setup:
    daemon: Daemon
    hub: HubServer
    keys: Keys
    tcp: str

    @property
    def http(self) -> str:
        return self.daemon.http

    @property
    def ipc(self) -> str:
        return self.daemon.ipc

    def store(self) -> ModelStore:
        """The daemon's store, read from this process (as `hfd ls` does)."""
        return ModelStore(load_settings(cli={"state_dir": self.daemon.workdir / "state"}, environ={}))

    def cli(self, *args: str) -> list[str]:
        return [*args, "--ipc-path", self.daemon.ipc_path.as_posix(), "--timeout", "120"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("curve")
    server_public, server_secret = create_keypair(root, "server")
    alice_public, alice_secret = create_keypair(root / "alice", "alice")
    _, mallory_secret = create_keypair(root / "mallory", "mallory")
    clients = root / "clients"
    clients.mkdir()
    shutil.copy(alice_public, clients / "alice.key")
    return Keys(server_public, server_secret, alice_secret, mallory_secret, clients)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Setup]:
    model = tiny_bert()
    hub = HubServer([HubRepo.from_dir(name, model) for name in REPOS]).start()
    tcp = f"tcp://127.0.0.1:{free_port()}"
    args = [
        "--engine", "torch",
        *hub.only_source_flags(),
        "--ipc-tcp", tcp,
        "--ipc-curve-secret-key", str(keys.server_secret),
        "--ipc-curve-clients-dir", str(keys.clients),
    ]  # fmt: skip
    try:
        daemon = start_daemon(
            tmp_path_factory.mktemp("daemon"), {EMB: model}, args=args, env={"HF_HUB_OFFLINE": "0"}
        )
    except BaseException:
        hub.stop()
        raise
    try:
        yield Setup(daemon=daemon, hub=hub, keys=keys, tcp=tcp)
    finally:
        code = daemon.stop()
        hub.stop()
        assert code == 0, "\n".join(daemon.output[-40:])


@pytest.fixture(scope="module")
def client(setup: Setup) -> Iterator[Client]:
    with Client(setup.ipc, timeout=120) as c:
        yield c


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]  # type: ignore[no-any-return]


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- stats and ps


def test_stats_on_both_doors_count_cache_hits(setup: Setup, client: Client) -> None:
    first = client.embeddings.create(model=EMB, input=["stats are counted"])
    again = client.embeddings.create(model=EMB, input=["stats are counted"])
    assert (again.embeddings == first.embeddings).all()

    over_http = httpx.get(setup.http + "/api/stats", timeout=30)
    assert over_http.status_code == 200
    stats = over_http.json()
    assert stats["cache"]["hits"] >= 1 and stats["cache"]["misses"] >= 1
    assert stats["models"]["loads"] >= 1 and stats["models"]["loaded"] >= 1
    ram = stats["models"]["memory"]["ram"]
    assert EMB in ram["models"] and 0 < ram["used_bytes"] <= ram["budget_bytes"]
    assert stats["models"]["breakers"] == {}

    over_ipc = client.stats()
    assert set(over_ipc) == set(stats)
    assert over_ipc["cache"]["hits"] >= stats["cache"]["hits"]

    async def from_async() -> dict[str, Any]:
        async with AsyncClient(setup.ipc, timeout=60) as ac:
            return await ac.stats()

    assert asyncio.run(from_async())["models"]["memory"]["ram"]["models"] == ram["models"]


def test_ps_shows_memory_estimate_and_breaker(
    setup: Setup, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    client.load(EMB)
    (m,) = [m for m in client.ps() if m.name == EMB]
    assert m.memory_estimate is not None and m.memory_estimate["total"] > 0
    assert m.memory_estimate["weights"] > 0 and m.memory_reserved_bytes > 0
    assert m.memory_pool == "ram" and m.breaker_state == "closed"

    assert cli(setup.cli("ps")) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:10] == [
        "NAME", "TASK", "ENGINE", "DEVICE", "PRECISION", "MEMORY", "ESTIMATE", "KV", "CACHE", "BREAKER"
    ]  # fmt: skip
    (row,) = [r for r in rows if r.split()[0] == EMB]
    assert "closed" in row.split()


# ----------------------------------------------------------------------------- keep_alive on load


def test_keep_alive_on_load_through_every_door(
    setup: Setup, client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    r = httpx.post(setup.http + "/api/load", json={"model": EMB, "keep_alive": "5m"}, timeout=120)
    assert r.status_code == 200 and r.json()["keep_alive"] == 300.0
    assert 0 < r.json()["expires_in"] <= 300.0

    kept = client.load(EMB, keep_alive=-1)
    assert kept.keep_alive == -1.0 and kept.expires_in is None

    async def from_async() -> float | None:
        async with AsyncClient(setup.ipc, timeout=60) as ac:
            return (await ac.load(EMB, keep_alive="90s")).keep_alive

    assert asyncio.run(from_async()) == 90.0

    assert cli(setup.cli("load", EMB, "--keep-alive", "2h")) == 0
    assert "unloads after 2h00m idle" in capsys.readouterr().out
    assert {m.name: m.keep_alive for m in client.ps()}[EMB] == 7200.0

    bad = httpx.post(setup.http + "/api/load", json={"model": EMB, "keep_alive": "soon"}, timeout=30)
    assert bad.status_code == 400 and error_of(bad)["param"] == "keep_alive"
    with pytest.raises(ValidationFailed) as err:
        client.load(EMB, keep_alive="soon")
    assert err.value.param == "keep_alive"
    assert cli(setup.cli("load", EMB, "--keep-alive", "soon")) == 1
    assert "keep_alive" in capsys.readouterr().err
    # The refused requests changed nothing.
    assert {m.name: m.keep_alive for m in client.ps()}[EMB] == 7200.0


# ----------------------------------------------------------------------------- pulls


def test_pull_over_http_streams_progress_then_the_snapshot(setup: Setup) -> None:
    repo = setup.hub.repos["acme/bert-http"]
    with httpx.Client(timeout=120) as http:
        r = http.post(setup.http + "/api/pull", json={"model": "acme/bert-http"})
    assert r.status_code == 200
    lines = ndjson(r)
    *progress, last = lines
    assert last["status"] == "success", last
    assert (last["model"], last["repo"], last["commit"], last["source"]) == (
        "acme/bert-http",
        "acme/bert-http",
        repo.commit,
        "hub",
    )
    statuses = [p["phase"] for p in progress]
    # The download ends with "done"; the export the first load needs (export_on_pull) follows,
    # then, for a model more than one engine can serve here, the engines' measurement.
    assert "downloading" in statuses and statuses[statuses.index("done") :] in AFTER_DOWNLOAD
    downloading = [p for p in progress if p["phase"] == "downloading"][-1]
    assert downloading["total"] == sum(len(d) for d in repo.files.values())
    assert {"completed", "total", "files_done", "files_total", "source", "ref"} <= set(downloading)

    listed = {(s.snapshot.repo, s.snapshot.commit) for s in setup.store().list_snapshots()}
    assert ("acme/bert-http", repo.commit) in listed

    # Not streamed: one JSON object. The store answers without asking the Hub again.
    asked = len(setup.hub.requests)
    again = httpx.post(
        setup.http + "/api/pull", json={"model": "acme/bert-http", "stream": False}, timeout=120
    )
    assert again.status_code == 200 and again.json()["commit"] == repo.commit
    assert again.json()["status"] == "success" and len(setup.hub.requests) == asked


def test_pull_over_ipc_reports_progress_and_the_model_then_serves(setup: Setup, client: Client) -> None:
    events: list[PullProgress] = []
    pulled = client.pull("acme/bert-ipc", progress=events.append)
    repo = setup.hub.repos["acme/bert-ipc"]
    assert (pulled.repo, pulled.commit, pulled.source, pulled.status) == (
        "acme/bert-ipc",
        repo.commit,
        "hub",
        "success",
    )
    statuses = [e.status for e in events]
    assert statuses[statuses.index("done") :] in AFTER_DOWNLOAD
    assert any(e.status == "downloading" and e.total > 0 for e in events)
    assert all(e.ref == "acme/bert-ipc@main" for e in events)
    assert Path(pulled.path).is_dir() and (Path(pulled.path) / "config.json").is_file()
    # The pulled model is in the store, so the daemon serves it by its reference.
    vectors = client.embeddings.create(model="acme/bert-ipc", input=["pulled"]).embeddings
    assert vectors.shape[0] == 1 and vectors.shape[1] > 0

    async def from_async() -> tuple[str, list[str]]:
        seen: list[str] = []

        async def note(p: PullProgress) -> None:
            seen.append(p.status)

        async with AsyncClient(setup.ipc, timeout=120) as ac:
            result = await ac.pull("acme/bert-async", progress=note)
        return result.commit or "", seen

    commit, seen = asyncio.run(from_async())
    assert commit == setup.hub.repos["acme/bert-async"].commit
    assert seen[seen.index("done") :] in AFTER_DOWNLOAD
    listed = {s.snapshot.repo for s in setup.store().list_snapshots()}
    assert {"acme/bert-ipc", "acme/bert-async"} <= listed


def test_pull_of_a_missing_model_names_where_it_looked(setup: Setup, client: Client) -> None:
    with httpx.Client(timeout=60) as http:
        streamed = http.post(setup.http + "/api/pull", json={"model": "acme/nope"})
        plain = http.post(setup.http + "/api/pull", json={"model": "acme/nope", "stream": False})
    assert streamed.status_code == 200  # the stream had started; the error is its last line
    last = ndjson(streamed)[-1]
    assert last["status"] == "error" and last["error"]["code"] == "model_not_found"
    places = [p["place"] for p in last["error"]["details"]["looked_in"]]
    assert any(setup.hub.url in p for p in places) and any(p.startswith("store") for p in places)

    assert plain.status_code == 404
    err = error_of(plain)
    assert err["code"] == "model_not_found" and setup.hub.url in err["message"]

    with pytest.raises(ModelNotFound) as missing:
        client.pull("acme/nope")
    assert any(setup.hub.url in p["place"] for p in missing.value.details["looked_in"])


@pytest.mark.parametrize("ref", ["../../etc", "/tmp", "not a ref", "ipfs://nope"])
def test_pull_refuses_bad_references_before_streaming(setup: Setup, client: Client, ref: str) -> None:
    r = httpx.post(setup.http + "/api/pull", json={"model": ref}, timeout=30)
    assert (
        r.status_code == 400 and error_of(r)["code"] == "invalid_request" and error_of(r)["param"] == "model"
    )
    with pytest.raises(InvalidRequest):
        client.pull(ref)
    missing_model = httpx.post(setup.http + "/api/pull", json={"stream": True}, timeout=30)
    assert missing_model.status_code == 400 and error_of(missing_model)["param"] == "model"


# ----------------------------------------------------------------------------- CURVE over TCP


def test_client_over_curve_tcp(setup: Setup) -> None:
    k = setup.keys
    # Key files, as `hfd keys curve` writes them; the client's public key comes from its secret.
    with Client(setup.tcp, curve_server_key=k.server, curve_secret_key=k.alice, timeout=120) as c:
        assert c.health()["status"] == "ok"
        assert c.embeddings.create(model=EMB, input=["over tcp"]).embeddings.shape[0] == 1
        # CURVE clients get ipc_tcp_scopes (inference): no pulls, no stats.
        with pytest.raises(Forbidden):
            c.pull("acme/bert-http")
        with pytest.raises(Forbidden):
            c.stats()

    # Z85 strings work the same, in the asyncio client.
    server_public, _ = zmq.auth.load_certificate(str(k.server))
    alice_public, alice_secret = zmq.auth.load_certificate(str(k.alice))
    assert alice_secret is not None

    async def from_async() -> dict[str, Any]:
        async with AsyncClient(
            setup.tcp,
            curve_server_key=server_public.decode(),
            curve_public_key=alice_public.decode(),
            curve_secret_key=alice_secret.decode(),
            timeout=60,
        ) as ac:
            return await ac.health()

    assert asyncio.run(from_async())["status"] == "ok"


def health_error(endpoint: str, **kwargs: Any) -> HfdError:
    """What the first request of a client with these settings raises (sync and async agree)."""
    with Client(endpoint, **kwargs) as c, pytest.raises(HfdError) as sync_error:
        c.health()

    async def from_async() -> None:
        async with AsyncClient(endpoint, **kwargs) as ac:
            await ac.health()

    with pytest.raises(HfdError) as async_error:
        asyncio.run(from_async())
    assert type(async_error.value) is type(sync_error.value)
    return sync_error.value


def test_client_over_curve_tcp_fails_cleanly(setup: Setup, keys: Keys) -> None:
    # A client key the daemon does not know: refused, and told so.
    refused = health_error(
        setup.tcp, curve_server_key=keys.server, curve_secret_key=keys.mallory, connect_timeout=2
    )
    assert isinstance(refused, Unauthorized) and "ipc_curve_clients_dir" in refused.message

    # The wrong server key: the handshake fails.
    wrong_server = zmq.curve_keypair()[0].decode()
    failed = health_error(
        setup.tcp, curve_server_key=wrong_server, curve_secret_key=keys.alice, connect_timeout=2
    )
    assert isinstance(failed, DaemonUnavailable) and "curve_server_key" in failed.message

    # Nobody listening at all: the health probe times out.
    nobody = f"tcp://127.0.0.1:{free_port()}"
    absent = health_error(
        nobody, curve_server_key=keys.server, curve_secret_key=keys.alice, connect_timeout=1
    )
    assert isinstance(absent, DaemonUnavailable) and nobody in absent.message
    assert "curve_server_key" not in absent.message
