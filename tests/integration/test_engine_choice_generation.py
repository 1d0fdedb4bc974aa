"""The engine order measured on this machine for text generation, with the real engines on the
tiny Llama: OpenVINO (its pipeline in its engine process) and torch are both loaded through the
loader, timed one stream and a small batch in tokens/s and closed; a new manager on the same
state dir loads the measured winner at once, without measuring, and serves a request with it.
Which engine wins is the machine's to say: only that the load follows the ranking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.models import tiny_llama

from hfd.backends.base import SamplingParams
from hfd.daemon.models.budgets import Budgets
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.models.memory import RAM
from hfd.daemon.settings import ModelSpec, Settings, load_settings, with_overrides

pytest.importorskip("torch", reason="torch is one of the engines measured")
pytest.importorskip("openvino_genai", reason="OpenVINO is one of the engines measured")
pytest.importorskip("optimum.intel", reason="optimum-intel exports the OpenVINO IR")
pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
async def settings(tmp_path: Path) -> AsyncIterator[Settings]:
    base = load_settings(
        environ={"HFD_CACHE_DIR": str(tmp_path / "cache"), "HFD_STATE_DIR": str(tmp_path / "state")}
    )
    yield with_overrides(
        base, models=(ModelSpec(ref=str(tiny_llama()), name="chat", threads=1, max_running=4),)
    )


async def test_generation_engines_are_measured_and_a_new_manager_follows_the_ranking(
    settings: Settings,
) -> None:
    first = ModelManager(settings, budgets=Budgets({RAM: 1 << 40}))
    try:
        result = await first.tune("chat")
    finally:
        await first.aclose()
    assert result["measured"] is True and result["unit"] == "tok/s"
    assert set(result["ranking"]) == {"openvino", "torch"}, result["figures"]
    for figure in result["figures"]:
        assert set(figure["rates"]) == {"1 stream", "4 streams"} and figure["score"] > 0
    assert first.loaded() == []  # the measured engines were closed again

    again = ModelManager(settings, budgets=Budgets({RAM: 1 << 40}))
    try:
        async with again.acquire("chat") as lm:
            assert lm.engine == result["ranking"][0]
            assert lm.engine_reason.startswith(f"measured on this machine: {lm.engine} ")
            stream = lm.generation().submit([1, 5, 6], SamplingParams(max_tokens=3, temperature=0.0))
            assert sum([len(chunk.token_ids) async for chunk in stream]) > 0
        assert again.counters["engine_measurements"] == 0
    finally:
        await again.aclose()
