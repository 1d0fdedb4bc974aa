"""A real ``hfd serve`` on the fake engine for the web page, OpenAPI and fuzz tests: a chat
model and an embedding model that answer in milliseconds, and (optionally) a local
Hub-compatible endpoint to pull from, so nothing leaves the machine."""

from __future__ import annotations

from pathlib import Path

from hfd.backends.registry import FAKE_ENGINE_ENV
from support.daemon import Daemon, start_daemon
from support.fake_models import fake_model
from support.hub_server import HubServer

CHAT = "chat"
EMBED = "emb"


def start_fake_daemon(root: Path, *, hub: HubServer | None = None, args: tuple[str, ...] = ()) -> Daemon:
    models: dict[str, Path | str] = {
        CHAT: fake_model(root / "models", "llama"),
        EMBED: fake_model(root / "models", "bert"),
    }
    flags = ["--usage-flush-seconds", "0.2", "--ipfs-enabled", "false", *args]
    env = {FAKE_ENGINE_ENV: "1"}
    if hub is not None:
        flags += ["--hub-endpoint", hub.url, "--hub-offline", "false", "--store-use-hf-cache", "false"]
        env["HF_HUB_OFFLINE"] = "0"
    return start_daemon(root / "work", models, args=flags, env=env)
