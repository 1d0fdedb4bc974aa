"""``hfd.client.Client()`` with no endpoint finds a daemon whose socket only its config file
names, given only ``HFD_CONFIG_FILE`` (as ``hfd ps`` does)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from support.daemon import start_daemon
from support.fake_models import fake_model

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.client import Client


def test_client_finds_the_daemon_through_its_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Socket paths are limited to ~100 bytes: a short directory of its own under the temporary
    # directory (Daemon.stop removes the socket's directory, so never the temporary dir itself).
    run = Path(tempfile.mkdtemp(prefix="hfd-disc-"))
    sock = run / "d.sock"
    work = tmp_path / "custom place"
    daemon = start_daemon(
        work,
        {"chat": fake_model(tmp_path / "models", "llama")},
        extra_config=f'[ipc]\npath = "{sock}"\n',
        env={FAKE_ENGINE_ENV: "1"},
    )
    try:
        assert daemon.ipc_path == sock
        for var in ("HFD_IPC_PATH", "HFD_RUNTIME_DIR", "HFD_SYSTEM", "RUNTIME_DIRECTORY"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HFD_CONFIG_FILE", str(work / "config.toml"))
        with Client(timeout=30) as client:
            assert client.health()["status"] == "ok"
            assert [m.id for m in client.models.list().data] == ["chat"]
    finally:
        daemon.stop()
        shutil.rmtree(run, ignore_errors=True)
