"""A real ``hfd serve`` on the fake engine: a model whose load takes a while is listed by
``/api/ps``, the IPC ps operation and ``hfd ps`` with its phase while it loads (``loading``, then
the ``compiling`` and ``warming`` the engine reports), then as ready."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from support.daemon import Daemon, start_daemon
from support.fake_models import fake_model

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.client import Client
from hfd.daemon.cli.client_cmds import ps_table

LOAD_MS = 4000  # the fake engine's load latency: long enough to see the load in ps


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("phases-daemon")
    path = fake_model(root / "models", "bert")
    config = (
        f'[[models]]\nname = "slow"\nref = "{path}"\nengine = "fake"\noptions = {{ load_ms = {LOAD_MS} }}\n'
    )
    d = start_daemon(root / "work", {}, extra_config=config, env={FAKE_ENGINE_ENV: "1"})
    try:
        yield d
    finally:
        d.stop()


def _loading_row(http: httpx.Client) -> dict[str, object] | None:
    rows = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
    row = rows.get("slow")
    return row if row is not None and row.get("state") != "ready" else None


def test_a_load_shows_its_phase_then_ready(daemon: Daemon) -> None:
    replies: list[httpx.Response] = []
    with httpx.Client(base_url=daemon.http, timeout=60) as http:
        assert _loading_row(http) is None
        first = threading.Thread(
            target=lambda: replies.append(http.post("/v1/embeddings", json={"model": "slow", "input": "a b"}))
        )
        first.start()
        row = None
        while row is None and first.is_alive():  # resolving, then loading for LOAD_MS / 3
            seen = _loading_row(http)
            row = seen if seen is not None and seen["state"] == "loading" else None
        assert row is not None, "the load never showed as loading in /api/ps"
        assert row["engine"] == "fake" and row["task"] == "embed" and row["percent"] is None
        assert isinstance(row["elapsed_seconds"], float) and row["elapsed_seconds"] >= 0
        with Client(daemon.ipc, timeout=60) as client:  # the IPC door and the CLI table alike
            during = {m.name: m for m in client.ps()}
        assert during["slow"].state == "loading" and during["slow"].percent is None
        assert "loading" in ps_table(list(during.values()))
        # Then what the engine itself reports: its compile, then its warm-up, each timed apart.
        states: list[str] = ["loading"]
        while first.is_alive():
            seen = _loading_row(http)
            if seen is not None and seen["state"] != states[-1]:
                states.append(str(seen["state"]))
                assert float(seen["state_seconds"]) < float(seen["elapsed_seconds"])
        assert states == ["loading", "compiling", "warming"], states
        first.join(60)
        assert replies and replies[0].status_code == 200
        rows = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
        assert rows["slow"]["state"] == "ready" and rows["slow"]["engine"] == "fake"
