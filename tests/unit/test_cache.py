"""The response cache: keys, LRU by bytes, TTL, persistence across restarts, replay."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.clocks import Clock
from support.models import tiny_bert

from hfd._atomic_files import tmp_name
from hfd.daemon import cache as rc
from hfd.daemon.cache import ResponseCache
from hfd.daemon.cache_streams import ReplayStream
from hfd.daemon.scheduler.generation import TokenChunk
from hfd.daemon.schema import ChatCompletionRequest, EmbeddingRequest

pytestmark = pytest.mark.anyio


def chat(**fields: object) -> ChatCompletionRequest:
    body: dict[str, object] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    return ChatCompletionRequest.model_validate(body)


# ----------------------------------------------------------------------------- keys


def test_fields_that_do_not_change_the_result_do_not_change_the_key() -> None:
    base = rc.request_key("chat", "id", chat(temperature=0))
    same = rc.request_key(
        "chat", "id",
        chat(temperature=0, stream=True, stream_options={"include_usage": True}, user="u", keep_alive="5m", model="alias"),
    )  # fmt: skip
    assert same == base
    assert rc.request_key("chat", "id", chat(temperature=0, seed=1)) != base
    assert rc.request_key("chat", "id", chat(temperature=0.5)) != base
    assert rc.request_key("chat", "id", chat(temperature=0, max_tokens=3)) != base
    assert rc.request_key("chat", "other-model", chat(temperature=0)) != base
    assert rc.request_key("completion", "id", chat(temperature=0)) != base
    e1 = EmbeddingRequest(model="m", input=["a", "b"], encoding_format="base64")
    e2 = EmbeddingRequest(model="m", input=["a", "b"])
    assert rc.request_key("embed", "id", e1) == rc.request_key("embed", "id", e2)
    assert rc.request_key("embed", "id", EmbeddingRequest(model="m", input=["a", "b"], dimensions=8)) != (
        rc.request_key("embed", "id", e2)
    )


def test_only_deterministic_generation_is_cacheable() -> None:
    assert rc.generation_cacheable(0.0, None)
    assert rc.generation_cacheable(0.7, 42)
    assert not rc.generation_cacheable(0.7, None)
    assert not rc.generation_cacheable(None, None)  # OpenAI's default temperature is 1


def test_snapshot_identity_follows_files_engine_and_device(tmp_path: Path) -> None:
    model = tmp_path / "m"
    shutil.copytree(tiny_bert(), model)
    first = rc.snapshot_identity(model, engine="torch", device="cpu")
    assert rc.snapshot_identity(model, engine="torch", device="cpu") == first
    assert rc.snapshot_identity(model, engine="openvino", device="cpu") != first
    assert rc.snapshot_identity(model, engine="torch", device="cuda:0") != first
    assert rc.snapshot_identity(model, engine="torch", device="cpu", options={"dtype": "float16"}) != first
    assert rc.snapshot_identity(model, engine="torch", device="cpu", options={"threads": 3}) == first
    st = (model / "config.json").stat()
    os.utime(model / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert rc.snapshot_identity(model, engine="torch", device="cpu") != first


# ----------------------------------------------------------------------------- store


def test_lru_by_bytes() -> None:
    cache = ResponseCache(max_bytes=300, ttl=0)
    cache.put("a", b"a" * 100)
    cache.put("b", b"b" * 100)
    cache.put("c", b"c" * 100)
    assert cache.get("a") == b"a" * 100  # a is now the most recently used
    cache.put("d", b"d" * 150)  # needs 150 bytes: b then c go (least recently used first)
    assert cache.get("b") is None and cache.get("c") is None
    assert cache.get("a") == b"a" * 100 and cache.get("d") == b"d" * 150
    stats = cache.stats()
    assert stats["bytes"] == 250 and stats["entries"] == 2 and stats["evictions"] == 2
    assert stats["hits"] == 3 and stats["misses"] == 2
    assert not cache.put("huge", b"x" * 301)  # larger than the whole cache: not stored
    assert "a" in cache and "huge" not in cache


def test_ttl() -> None:
    clock = Clock(1_700_000_000.0)
    cache = ResponseCache(max_bytes=1000, ttl=60, clock=clock)
    cache.put("k", b"v")
    clock.now += 59
    assert cache.get("k") == b"v"
    clock.now += 1
    assert cache.get("k") is None
    assert cache.stats()["expired"] == 1 and cache.stats()["bytes"] == 0


def test_replacing_an_entry_keeps_the_byte_count_right() -> None:
    cache = ResponseCache(max_bytes=1000, ttl=0)
    cache.put("k", b"1" * 100)
    cache.put("k", b"2" * 10)
    assert cache.get("k") == b"2" * 10
    assert cache.stats()["bytes"] == 10


def test_persisted_entries_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0)
    first = ResponseCache(max_bytes=1000, ttl=100, directory=tmp_path, clock=clock)
    first.put("a" * 64, b"alpha")
    clock.now += 10
    first.put("b" * 64, b"beta")
    again = ResponseCache(max_bytes=1000, ttl=100, directory=tmp_path, clock=clock)
    assert again.stats()["entries"] == 2 and again.stats()["memory_bytes"] == 0
    assert again.get("a" * 64) == b"alpha"
    assert again.stats()["memory_bytes"] == 5
    # The TTL counts from when the entry was made, not from the restart.
    clock.now += 95
    later = ResponseCache(max_bytes=1000, ttl=100, directory=tmp_path, clock=clock)
    assert later.get("a" * 64) is None
    assert later.get("b" * 64) == b"beta"
    assert not (tmp_path / "aa" / ("a" * 64)).exists()


def test_corrupt_or_torn_files_are_dropped(tmp_path: Path) -> None:
    cache = ResponseCache(max_bytes=1000, ttl=0, directory=tmp_path)
    cache.put("c" * 64, b"payload")
    cache.put("d" * 64, b"payload")
    path = tmp_path / "cc" / ("c" * 64)
    raw = bytearray(path.read_bytes())
    raw[rc._HEADER.size + 1] ^= 0xFF  # flip a byte of the value: the checksum fails
    path.write_bytes(bytes(raw))
    (tmp_path / "dd" / ("d" * 64)).write_bytes(b"HFDC1")  # torn: shorter than its header
    interrupted = [tmp_name(tmp_path / "dd" / ("e" * 64)), tmp_path / "dd" / ".tmp-abc"]  # and an older name
    for path in interrupted:
        path.write_bytes(b"half")
    again = ResponseCache(max_bytes=1000, ttl=0, directory=tmp_path)
    assert again.get("c" * 64) is None
    assert again.get("d" * 64) is None
    assert not any(path.exists() for path in interrupted)
    assert again.stats()["entries"] == 0


def test_restart_with_a_smaller_budget_keeps_the_newest(tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0)
    big = ResponseCache(max_bytes=1000, ttl=0, directory=tmp_path, clock=clock)
    for i in range(5):
        clock.now += 1
        big.put(f"{i:064d}", bytes(100))
    small = ResponseCache(max_bytes=250, ttl=0, directory=tmp_path, clock=clock)
    assert small.stats()["entries"] == 2
    assert small.get(f"{4:064d}") == bytes(100) and small.get(f"{0:064d}") is None


async def test_async_access_with_persistence(tmp_path: Path) -> None:
    cache = ResponseCache(max_bytes=1000, ttl=0, directory=tmp_path)
    assert await cache.aput("e" * 64, b"value")
    again = ResponseCache(max_bytes=1000, ttl=0, directory=tmp_path)
    assert await again.aget("e" * 64) == b"value"
    assert await again.aget("f" * 64) is None


def test_from_settings(tmp_path: Path) -> None:
    from hfd.daemon.settings import load_settings

    s = load_settings(
        environ={"HFD_CACHE_DIR": str(tmp_path), "HFD_CACHE_PERSIST": "1", "HFD_CACHE_MAX_BYTES": "4096"}
    )
    cache = ResponseCache.from_settings(s)
    assert cache is not None and cache.max_bytes == 4096 and cache.directory == tmp_path / "responses"
    assert ResponseCache.from_settings(load_settings(environ={"HFD_CACHE_ENABLED": "0"})) is None


# ----------------------------------------------------------------------------- values


def test_embedding_values_round_trip_bit_for_bit() -> None:
    vectors = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    back, tokens = rc.decode_embedding(rc.encode_embedding(vectors, 12))
    assert tokens == 12 and back.dtype == np.float32
    assert back.tobytes() == vectors.tobytes()


async def test_replay_stream_yields_the_recorded_chunks() -> None:
    chunks = [TokenChunk("Hel", [1, 2], None), TokenChunk("lo", [3], "length")]
    decoded, prompt_tokens = rc.decode_generation(rc.encode_generation(chunks, 5))
    assert decoded == chunks and prompt_tokens == 5
    stream = ReplayStream(decoded, prompt_tokens)
    assert stream.finish_reason is None
    got = [c async for c in stream]
    assert got == chunks
    assert stream.completion_tokens == 3 and stream.finish_reason == "length"
