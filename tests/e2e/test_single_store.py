"""One daemon, one model store: a load that pulls (``allow_pull``) and pulls through the HTTP
door and the IPC door, all of one model at the same time, share one download.

The store merges concurrent pulls of one reference in-process (its single-flight table); that
only holds when every path into it reaches the same ``ModelStore``, which the composition root
(``hfd.daemon.app.Daemon``) builds once and passes to the manager and the pulls. The Hub is a
local server throttled so the first pull is still downloading when the others arrive.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.daemon import start_daemon
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert

from hfd.client import Client, PullProgress

pytestmark = pytest.mark.timeout(300)

REF = "acme/once"


def test_pulls_and_a_load_of_one_model_through_both_doors_share_one_download(tmp_path: Path) -> None:
    model = tiny_bert()
    size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
    # About two seconds of download: long enough for both pulls to join the load's.
    with HubServer([HubRepo.from_dir(REF, model)], rate=size / 2.0) as hub:
        args = [
            "--engine", "torch",
            *hub.only_source_flags(),
            "--allow-pull", "true",
        ]  # fmt: skip
        daemon = start_daemon(tmp_path / "daemon", {}, args=args, env={"HF_HUB_OFFLINE": "0"})
        try:
            results: dict[str, Any] = {}
            errors: list[BaseException] = []

            def ipc_load() -> Any:
                with Client(daemon.ipc, timeout=120) as client:
                    return client.load(REF).name

            def http_pull() -> Any:
                with httpx.stream("POST", daemon.http + "/api/pull", json={"model": REF}, timeout=120) as r:
                    assert r.status_code == 200
                    return [json.loads(line) for line in r.iter_lines() if line]

            def ipc_pull() -> Any:
                events: list[PullProgress] = []
                with Client(daemon.ipc, timeout=120) as client:
                    client.pull(REF, progress=events.append)
                return [{"status": e.status} for e in events]

            def run(name: str, fn: Callable[[], Any]) -> threading.Thread:
                def target() -> None:
                    try:
                        results[name] = fn()
                    except BaseException as exc:
                        errors.append(exc)

                thread = threading.Thread(target=target)
                thread.start()
                return thread

            threads = [run("load", ipc_load)]
            # The pulls come once the load's download is under way.
            while not any("/resolve/" in r or "/lfs/" in r for r in hub.requests):
                assert threads[0].is_alive(), errors
                time.sleep(0.01)
            threads += [run("http", http_pull), run("ipc", ipc_pull)]
            for t in threads:
                t.join(timeout=180)
            assert not errors, errors
        finally:
            daemon.stop()
        assert results["load"] == REF
        assert results["http"][-1]["status"] == "success"
        # A pull that found another store's lock on the repository would report "waiting";
        # these joined the download in flight.
        for name in ("http", "ipc"):
            statuses = [e["status"] for e in results[name]]
            assert "waiting" not in statuses, (name, statuses)
        bodies = Counter(r for r in hub.requests if r.startswith("GET ") and "/api/models/" not in r)
        assert bodies and max(bodies.values()) == 1, bodies
