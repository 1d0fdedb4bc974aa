"""A flipped byte in a stored model, end to end: `hfd verify` quarantines it, the running daemon
refuses to load the model (503 saying what to run), `hfd pull` fetches the file again from the
local Hub-compatible server, and the daemon serves the model."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from support.daemon import start_daemon
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert
from support.store_env import closed_port

from hfd.daemon.cli import main

pytestmark = [pytest.mark.usefixtures("hub_online"), pytest.mark.timeout(240)]

REPO = "acme/tiny-bert"


def _embed(http: str) -> httpx.Response:
    return httpx.post(http + "/v1/embeddings", json={"model": "emb", "input": "hello"}, timeout=120)


def test_damaged_model_is_refused_then_repaired_and_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "d"
    with HubServer([HubRepo.from_dir(REPO, tiny_bert())]) as hub:
        flags = [
            "--state-dir", str(work / "state"),
            "--store-use-hf-cache", "false",
            "--hub-offline", "false",
            "--hub-endpoint", hub.url,
            "--ipfs-enabled", "false",
            "--log-format", "json",
        ]  # fmt: skip
        assert main(["pull", REPO, *flags]) == 0
        snapshot = Path(capsys.readouterr().out.strip().splitlines()[-1])
        weights = (snapshot / "model.safetensors").resolve()
        with weights.open("r+b") as fh:
            fh.seek(weights.stat().st_size // 2)
            b = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([b[0] ^ 0x80]))
        assert main(["verify", *flags]) == 1
        assert "model.safetensors" in capsys.readouterr().out

        daemon = start_daemon(
            work,
            {"emb": REPO},
            args=["--hub-offline", "true", "--ipfs-api", f"/ip4/127.0.0.1/tcp/{closed_port()}"],
        )
        try:
            refused = _embed(daemon.http)
            assert refused.status_code == 503, refused.text
            err = refused.json()["error"]
            assert err["code"] == "model_unavailable" and "damaged" in err["message"]
            assert f"hfd pull {REPO}" in err["message"] and str(work) not in refused.text

            assert main(["pull", REPO, *flags]) == 0  # beside the running daemon
            capsys.readouterr()
            served = _embed(daemon.http)
            assert served.status_code == 200, served.text
            assert len(served.json()["data"][0]["embedding"]) == 32
        finally:
            assert daemon.stop() == 0
