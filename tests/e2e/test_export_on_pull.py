"""``hfd pull`` builds the engine export the model's first load needs (``export_on_pull``): the
pull's stream shows an ``exporting`` phase, the export is in the export cache afterwards, and
the first request loads it without exporting (the manager's ``exports_built`` counter and the
export cache's log lines say so). The Hub is a local server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support.daemon import start_daemon
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert

from hfd.backends.exports import MARKER

pytest.importorskip("onnxruntime", reason="the ONNX Runtime engine exports the encoder")
pytest.importorskip("torch", reason="the ONNX export runs the model in torch")
pytestmark = pytest.mark.timeout(300)

REF = "acme/exported"


def test_pull_exports_and_the_first_request_does_not(tmp_path: Path) -> None:
    with HubServer([HubRepo.from_dir(REF, tiny_bert())]) as hub:
        args = ["--engine", "onnxruntime", *hub.only_source_flags()]
        daemon = start_daemon(tmp_path / "daemon", {}, args=args, env={"HF_HUB_OFFLINE": "0"})
        try:
            with httpx.Client(base_url=daemon.http, timeout=240) as http:
                with http.stream("POST", "/api/pull", json={"model": REF}) as r:
                    assert r.status_code == 200
                    events = [json.loads(line) for line in r.iter_lines() if line]
                phases = [e.get("phase") or e["status"] for e in events]
                assert "exporting" in phases and phases.index("exporting") < len(phases) - 1
                result = events[-1]
                assert result["export"] == {"engine": "onnxruntime", "device": "cpu", "built": True}
                exports = list((tmp_path / "daemon" / "cache" / "exports").glob(f"*/{MARKER}"))
                assert len(exports) == 1
                stats = http.get("/api/stats").json()["models"]
                assert stats["exports_built"] == 1 and stats["loads"] == 0

                reply = http.post("/v1/embeddings", json={"model": REF, "input": "hello"})
                assert reply.status_code == 200, reply.text
                stats = http.get("/api/stats").json()["models"]
                assert stats["loads"] == 1 and stats["exports_built"] == 1  # nothing exported at load
                assert any("export warm" in line for line in daemon.output)
                assert sum("export cold" in line for line in daemon.output) == 1  # the pull's
        finally:
            daemon.stop()
