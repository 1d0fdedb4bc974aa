"""``hfd run MODEL`` with no prompt: an interactive chat against a real daemon (fake engine),
its input piped: history across turns, ``\"\"\"`` blocks, ``/clear``, ``/bye``, and a model not
in the store pulled first."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from support.daemon import Daemon, start_daemon
from support.fake_models import fake_model
from support.hub_server import HubRepo, HubServer

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.client import Client

PULLED = "acme/chat-pulled"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, HubServer]]:
    root = tmp_path_factory.mktemp("chat-daemon")
    remote = fake_model(root / "hub", "llama", "remote")
    with HubServer([HubRepo.from_dir(PULLED, remote)]) as hub:
        args = hub.only_source_flags()
        d = start_daemon(
            root / "work",
            {"chat": fake_model(root / "models", "llama")},
            args=args,
            env={FAKE_ENGINE_ENV: "1", "HF_HUB_OFFLINE": "0"},
        )
        try:
            yield d, hub
        finally:
            d.stop()


def run(d: Daemon, model: str, text: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "hfd", "run", model, "--ipc-path", str(d.ipc_path), "--temperature", "0"]
    return subprocess.run(
        [*cmd, "--max-tokens", "4"], input=text, capture_output=True, text=True, timeout=120
    )


def replies(out: str) -> list[str]:
    return [block for block in out.split("\n\n") if block.strip()]


def test_turns_keep_the_history_until_clear(daemon: tuple[Daemon, HubServer]) -> None:
    d, _ = daemon
    out = run(d, "chat", "hi\nhi\n/clear\nhi\n/bye\nnever sent\n")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.replace("Cleared session context\n", "\n\n")
    first, second, third = replies(lines)
    # The second "hi" is answered with the first turn in its prompt; after /clear it is not.
    assert first == third != second


def test_a_message_of_several_lines(daemon: tuple[Daemon, HubServer]) -> None:
    d, _ = daemon
    block = run(d, "chat", '"""one\ntwo\n"""\n')
    same = run(d, "chat", '"""one\ntwo"""\n')
    different = run(d, "chat", "one\n")
    assert block.returncode == same.returncode == 0, block.stderr
    assert replies(block.stdout) == replies(same.stdout) != replies(different.stdout)
    assert len(replies(block.stdout)) == 1  # one message, not two


def test_a_model_not_in_the_store_is_pulled_first(daemon: tuple[Daemon, HubServer]) -> None:
    d, hub = daemon
    out = run(d, PULLED, "hello\n")
    assert out.returncode == 0, out.stderr
    assert f"pulling {PULLED}" in out.stderr and len(replies(out.stdout)) == 1
    assert any(f"/{PULLED}/resolve/" in r for r in hub.requests)
    with Client(d.ipc, timeout=30) as client:
        assert PULLED in {m.name for m in client.ps()}


def test_unknown_commands_are_answered_not_sent(daemon: tuple[Daemon, HubServer]) -> None:
    d, _ = daemon
    out = run(d, "chat", "/nope\n/?\n")
    assert out.returncode == 0 and "Unknown command '/nope'" in out.stdout and "/bye" in out.stdout
