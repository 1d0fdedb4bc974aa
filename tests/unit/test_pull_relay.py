"""How pull progress reaches a door's client (``hfd.daemon.pulls``): a slow client gets every
status change but only the newest event of each, and a pull that stalls repeats its last
event so the client can tell a slow pull from a daemon that is gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert
from support.store_env import store_settings

from hfd.client.errors import ModelNotFound
from hfd.daemon import pulls
from hfd.daemon.store.pull import PullProgress

pytestmark = pytest.mark.anyio


def progress(status: str, completed: int = 0) -> PullProgress:
    return PullProgress(ref="acme/x@main", status=status, source="hub", completed=completed, total=100)


async def test_a_slow_client_gets_every_status_and_the_newest_bytes() -> None:
    relay = pulls._Relay()
    for p in (
        progress("resolving"),
        progress("downloading", 10),
        progress("downloading", 60),
        progress("downloading", 100),
        progress("placing", 100),
        progress("done", 100),
    ):
        relay.put(p)  # all before the client reads anything
    relay.close()
    seen: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        seen.append(event)

    await relay.forward(emit)
    assert [(e["status"], e["completed"]) for e in seen] == [
        ("resolving", 0),
        ("downloading", 100),
        ("placing", 100),
        ("done", 100),
    ]


async def test_a_stalled_pull_repeats_its_last_event(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pulls, "HEARTBEAT", 0.01)
    relay = pulls._Relay()
    seen: list[dict[str, Any]] = []
    repeated = anyio.Event()

    async def emit(event: dict[str, Any]) -> None:
        seen.append(event)
        if len(seen) >= 3:
            repeated.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(relay.forward, emit)
        relay.put(progress("waiting"))
        with anyio.fail_after(10):
            await repeated.wait()
        relay.close()
    assert len(seen) >= 3 and all(e["status"] == "waiting" for e in seen)


@pytest.mark.usefixtures("hub_online")
async def test_pull_raises_the_error_itself_and_a_gone_client_stops_it(tmp_path: Path) -> None:
    """Errors leave ``Pulls.pull`` as themselves (never wrapped in an exception group): the
    forwarding's (a client gone), and the store's after its events were forwarded."""

    class Gone(Exception):
        pass

    seen: list[str] = []

    async def gone(event: dict[str, Any]) -> None:
        raise Gone

    async def note(event: dict[str, Any]) -> None:
        seen.append(event["status"])

    with HubServer([HubRepo.from_dir("acme/x", tiny_bert())]) as hub:
        service = pulls.Pulls(store_settings(tmp_path, hub_offline=False, hub_endpoint=hub.url))
        with pytest.raises(Gone):
            await service.pull("acme/x", gone)
        with pytest.raises(ModelNotFound) as missing:
            await service.pull("acme/nope", note)
        assert seen and seen[0] == "resolving"
        assert any(hub.url in p["place"] for p in missing.value.details["looked_in"])
        result = await service.pull("acme/x", note)
    assert result["status"] == "success" and result["commit"] == hub.repos["acme/x"].commit
    assert service.store.find("acme/x") is not None
