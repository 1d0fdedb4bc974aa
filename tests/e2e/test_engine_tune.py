"""The engine order measured on this machine, with the real engines on the tiny BERT through a
real ``hfd serve``: ``hfd tune`` times every candidate engine and stores the ranking in the
state dir; a restarted daemon loads the measured winner without measuring again and says why
in ``hfd ps``; ``hfd pull`` measures after its export. Which engine wins is not asserted (that
is the machine's to say): only that the load follows the stored ranking."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support.daemon import running_daemon
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert

from hfd.daemon.cli import main
from hfd.daemon.models.engine_choice import FILE_NAME

pytest.importorskip("torch", reason="torch is one of the engines measured (and exports ONNX)")
pytest.importorskip("onnxruntime", reason="ONNX Runtime is one of the engines measured")
pytest.importorskip("openvino", reason="OpenVINO is one of the engines measured")
pytest.importorskip("optimum.intel", reason="optimum-intel exports the OpenVINO IR")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENGINES = {"onnxruntime", "openvino", "torch"}  # the embedding candidates on an x86 CPU


def test_tune_ranks_the_engines_and_a_restart_loads_the_winner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = {"e": tiny_bert()}
    workdir = tmp_path / "daemon"
    with running_daemon(workdir, models) as daemon:
        ipc = ["--ipc-path", str(daemon.ipc_path), "--timeout", "500"]
        assert main(["tune", "e", "--json", *ipc]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["measured"] is True and set(result["ranking"]) == ENGINES
        assert all(f["score"] > 0 and "error" not in f for f in result["figures"]), result["figures"]
        stored = json.loads((workdir / "state" / FILE_NAME).read_text())
        assert [r["ranking"] for r in stored.values()] == [result["ranking"]]
        assert any("engine order measured" in line for line in daemon.output)

    with running_daemon(workdir, models) as daemon:  # a restart on the same state dir
        row = daemon.post_ok("/api/load", {"model": "e"}, timeout=300)
        assert row["engine"] == result["ranking"][0]
        assert row["engine_reason"].startswith(f"measured on this machine: {result['ranking'][0]} ")
        stats = httpx.get(f"{daemon.http}/api/stats", timeout=30).json()["models"]
        assert stats["engine_measurements"] == 0
        assert not any("engine order measured" in line for line in daemon.output)
        assert main(["ps", "--ipc-path", str(daemon.ipc_path)]) == 0
        assert f"e: on {row['engine']}, measured on this machine" in capsys.readouterr().out


def test_a_pull_measures_after_its_export(tmp_path: Path) -> None:
    ref = "acme/measured"
    with (
        HubServer([HubRepo.from_dir(ref, tiny_bert())]) as hub,
        running_daemon(
            tmp_path / "daemon", {}, args=hub.only_source_flags(), env={"HF_HUB_OFFLINE": "0"}
        ) as daemon,
        httpx.Client(base_url=daemon.http, timeout=500) as http,
    ):
        with http.stream("POST", "/api/pull", json={"model": ref}) as r:
            assert r.status_code == 200
            events = [json.loads(line) for line in r.iter_lines() if line]
        phases = [e.get("phase") or e["status"] for e in events]
        assert phases.index("exporting") < phases.index("measuring") < len(phases) - 1
        measured = events[-1]["engines"]
        assert measured["measured"] is True and set(measured["ranking"]) == ENGINES
        again = http.post("/api/tune", json={"model": ref}).json()  # on demand: measured again
        assert again["measured"] is True
        assert http.get("/api/stats").json()["models"]["engine_measurements"] == 2
