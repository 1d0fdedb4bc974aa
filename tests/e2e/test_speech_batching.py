"""Concurrent transcriptions through a real daemon (torch engine) share batched engine calls,
and each reply is the one that request gets alone: verbose_json with segments through the
official ``openai`` client, sent from threads at once, against the same requests sent one
after another (which equal transformers' greedy ``generate``: tests/e2e/test_speech_api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from support import media_models
from support.daemon import Daemon, running_daemon

pytest.importorskip("torch")
pytest.importorskip("openai")

MAX_BATCH = 4


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(
        tmp_path_factory.mktemp("speech-batch"),
        {"whisper": media_models.tiny_whisper()},
        extra_config=f"[batching]\naudio_max_batch = {MAX_BATCH}\n",
        args=["--engine", "torch"],
    ) as d:
        yield d


def _scheduler(d: Daemon) -> dict[str, Any]:
    ps = httpx.get(d.http + "/api/ps", timeout=30).json()["models"]
    return next(m for m in ps if m["name"] == "whisper")["scheduler"]  # type: ignore[no-any-return]


def _transcribe(d: Daemon, raw: bytes) -> dict[str, Any]:
    got = d.openai().audio.transcriptions.create(
        model="whisper", file=("t.wav", raw, "audio/wav"), language="en",
        response_format="verbose_json", timestamp_granularities=["segment"],
    )  # fmt: skip
    return got.model_dump()  # type: ignore[no-any-return]


def test_concurrent_requests_share_calls_and_get_their_own_replies(daemon: Daemon) -> None:
    uploads = [media_models.encode_audio(media_models.tone(1.0 + i, freq=200.0 + 90 * i)) for i in range(9)]
    alone = [_transcribe(daemon, raw) for raw in uploads]
    before = _scheduler(daemon)
    # One long request (35 s: long-form decoding, alone) holds the engine while the others queue.
    long = media_models.encode_audio(media_models.tone(35.0), fmt="flac")
    with ThreadPoolExecutor(len(uploads) + 1) as pool:
        first = pool.submit(
            httpx.post, daemon.http + "/v1/audio/transcriptions", timeout=120,
            files={"file": ("long.flac", long, "audio/flac")}, data={"model": "whisper"},
        )  # fmt: skip
        together = list(pool.map(lambda raw: _transcribe(daemon, raw), uploads))
        assert first.result().status_code == 200
    assert together == alone
    assert all(r["segments"] and r["text"] for r in together)
    after = _scheduler(daemon)
    requests = after["requests_finished"] - before["requests_finished"]
    calls = after["calls"] - before["calls"]
    assert requests == len(uploads) + 1
    # At most MAX_BATCH a call: 9 short requests need 3 calls at best, and fewer than 9 here.
    assert 1 + -(-len(uploads) // MAX_BATCH) <= calls < requests
