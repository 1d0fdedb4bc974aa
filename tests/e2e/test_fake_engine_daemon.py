"""A real ``hfd serve`` on the fake engine, with torch and transformers made unimportable: both
doors' generation and embeddings work on a box without them, in a second or two."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from support.daemon import Daemon, start_daemon
from support.fake_models import fake_model

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.client import Client

# Imported at interpreter start-up in the daemon (``sitecustomize``): any import of these fails.
NO_TORCH = "import sys\nfor m in ('torch', 'transformers', 'optimum'):\n    sys.modules[m] = None\n"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("fake-daemon")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_TORCH)
    models = {"chat": fake_model(root / "models", "llama"), "emb": fake_model(root / "models", "bert")}
    d = start_daemon(root / "work", models, env={FAKE_ENGINE_ENV: "1", "PYTHONPATH": str(site)})
    try:
        yield d
    finally:
        d.stop()


def test_http_chat_and_embeddings(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.http, timeout=60) as http:
        body = {
            "model": "chat",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "temperature": 0,
        }
        first = http.post("/v1/chat/completions", json=body).json()
        assert first["choices"][0]["message"]["content"]
        assert first["usage"]["completion_tokens"] == 5
        again = http.post("/v1/chat/completions", json=body).json()
        assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]

        emb = http.post("/v1/embeddings", json={"model": "emb", "input": ["a b", "c"]}).json()
        assert [len(e["embedding"]) for e in emb["data"]] == [8, 8]

        assert http.get("/api/hardware").json()["torch"]["installed"] is False  # torch was blocked
        ps = {m["name"]: m for m in http.get("/api/ps").json()["models"]}
        assert ps["chat"]["engine"] == ps["emb"]["engine"] == "fake"


def test_ipc_embeddings(daemon: Daemon) -> None:
    with Client(daemon.ipc, timeout=60) as client:
        result = client.embeddings.create(model="emb", input=["one", "two"])
    assert result.embeddings.shape == (2, 8)


def test_the_daemon_logged_no_failure(daemon: Daemon) -> None:
    # With torch unimportable, any code path that needed it would have logged an error.
    assert not [line for line in daemon.reader.lines if '"level": "ERROR"' in line or "Traceback" in line]
