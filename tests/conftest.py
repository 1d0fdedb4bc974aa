"""Shared fixtures. Tests build their models locally (tests/support/models.py) and only ever
talk to 127.0.0.1."""

from __future__ import annotations

import os

# Nothing in the test suite may reach the Hub or any other network service.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


# -- the model store: a real IPFS node on loopback, and the Hub switched back on for tests that
# point it at a local Hub-compatible server.

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Tests marked ``anyio`` run on asyncio only: the daemon runs on asyncio (uvicorn, pyzmq's
    asyncio sockets), so a trio run would test a configuration that is never shipped."""
    return "asyncio"


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A real IPFS node (Kubo or js-ipfs) on 127.0.0.1, shared by the session; skips saying why
    when none can start."""
    from support.ipfs_node import IpfsUnavailable, start_node

    try:
        node = start_node(tmp_path_factory.mktemp("ipfs") / "node-a")
    except IpfsUnavailable as exc:
        pytest.skip(f"no IPFS node: {exc}")
    yield node
    node.stop()


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let huggingface_hub make requests (to the test's own 127.0.0.1 server only)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
