"""The interface the doors use when a client goes away: cancelling the task that awaits
``Service.embed()`` stops that request's work at the next batch boundary. Real torch engine
and tiny BERT; the engine call is held at a gate so the cancellation lands mid-request."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from support.models import tiny_bert

from hfd.daemon.models.manager import ModelManager
from hfd.daemon.schema import EmbeddingRequest, parse
from hfd.daemon.service import Service
from hfd.daemon.settings import ModelSpec, load_settings, with_overrides

pytestmark = pytest.mark.anyio


async def test_cancelling_the_caller_of_embed_drops_the_rest_of_its_inputs(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the torch engine serves the tiny model")
    base = load_settings(environ={"HFD_STATE_DIR": str(tmp_path / "s"), "HFD_CACHE_DIR": str(tmp_path / "c")})
    spec = ModelSpec(ref=str(tiny_bert()), name="emb", engine="torch", device="cpu", threads=1)
    settings = with_overrides(
        base, models=(spec,), cache_enabled=False, encoder_max_batch=8, encoder_batch_wait_ms=0.0
    )
    manager = ModelManager(settings)
    service = Service(settings, manager)
    try:
        lm = await manager.load("emb")
        real = lm.model.embed
        gate, entered = threading.Event(), threading.Event()
        sizes: list[int] = []

        def held(batch: Any) -> Any:
            entered.set()
            gate.wait(30)
            sizes.append(len(batch.ids))
            return real(batch)

        lm.model.embed = held  # type: ignore[method-assign]
        request = parse(EmbeddingRequest, {"model": "emb", "input": [f"{i} words here" for i in range(1024)]})
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(service.embed, request)
                await anyio.to_thread.run_sync(entered.wait, 30)
                scope.cancel()  # the client went away
        assert lm.encoder().stats().dropped_items == 1024 - 8
        gate.set()
        one = await service.embed(parse(EmbeddingRequest, {"model": "emb", "input": "next"}))
        assert one.vectors.shape[0] == 1
        assert sizes == [8, 1]  # the first batch finished; the next one computed was the new request
        assert lm.in_use == 0
    finally:
        await manager.aclose()
