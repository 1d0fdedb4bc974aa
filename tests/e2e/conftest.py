"""A real ``hfd serve`` subprocess per test module, with the tiny test models and the real
all-MiniLM-L6-v2, on a temporary IPC socket and a free HTTP port read from its ready line."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import pytest
import zmq
from support.daemon import Daemon, start_daemon
from support.ipc_peer import dealer as ipc_dealer
from support.models import minilm, tiny_bert, tiny_llama


@dataclass
class Doors:
    """The running daemon's two doors, what it serves, and what the tests read from it.

    Test modules reach these through the ``doors`` fixture (``doors.CHAT`` ...), not by
    importing this module.
    """

    CHAT: ClassVar[str] = "chat"  # tiny Llama: context 256 tokens
    EMBED: ClassVar[str] = "emb"  # tiny BERT: 32 dimensions, normalised
    MINILM: ClassVar[str] = "minilm"  # the real all-MiniLM-L6-v2: 384 dimensions
    CONTEXT: ClassVar[int] = 256
    BODY_LIMIT: ClassVar[int] = 64 * 1024

    daemon: Daemon
    http: str
    ipc: str

    @property
    def base_url(self) -> str:
        return self.http + "/v1"

    def ps(self) -> dict[str, dict[str, Any]]:
        models = httpx.get(self.http + "/api/ps", timeout=30).json()["models"]
        return {m["name"]: m for m in models}

    def scheduler(self, model: str) -> dict[str, Any]:
        return self.ps()[model]["scheduler"]  # type: ignore[no-any-return]

    def wait_idle(self, model: str, timeout: float = 60.0) -> dict[str, Any]:
        """The model's scheduler counters once nothing runs or waits on it."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.scheduler(model)
            if stats.get("active", 0) == 0 or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)

    @classmethod
    def long_chat(cls, messages: list[dict[str, Any]], budget: int) -> dict[str, Any]:
        """A greedy streamed chat request body on ``CHAT`` that generates ``budget`` tokens
        (``ignore_eos``) unless it is stopped: a request to cut off midway."""
        body = {"model": cls.CHAT, "messages": messages, "stream": True, "max_tokens": budget}
        return body | {"ignore_eos": True, "temperature": 0}

    def logged(self, message: str) -> bool:
        return any(message in line for line in self.daemon.output)

    def wait_logged(self, message: str, timeout: float = 30.0) -> bool:
        return self.daemon.wait_logged(message, timeout)


@pytest.fixture(scope="module")
def doors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    models = {Doors.CHAT: tiny_llama(), Doors.EMBED: tiny_bert(), Doors.MINILM: minilm()}
    # The doors are under test, not the engines: torch loads these models fastest.
    args = ["--engine", "torch", "--http-max-body-bytes", str(Doors.BODY_LIMIT)]
    daemon = start_daemon(tmp_path_factory.mktemp("daemon"), models, args=args)
    try:
        yield Doors(daemon=daemon, http=daemon.http, ipc=daemon.ipc)
    finally:
        code = daemon.stop()
        assert code == 0, "\n".join(daemon.output[-40:])


@pytest.fixture(scope="module")
def daemon(doors: Doors) -> Daemon:
    """The shared daemon, for a module that starts none of its own (one that does names its
    own ``daemon`` fixture, which the ``http`` and ``dealer`` fixtures then reach)."""
    return doors.daemon


@pytest.fixture(scope="module")
def http(daemon: Daemon) -> Iterator[httpx.Client]:
    """An HTTP client on the module's daemon."""
    with httpx.Client(base_url=daemon.http, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def dealer(daemon: Daemon) -> Iterator[zmq.Socket[bytes]]:
    """A bare DEALER socket on the module's daemon's IPC socket."""
    with ipc_dealer(daemon.ipc) as sock:
        yield sock
