"""The IPC framing: what goes out comes back the same, and every malformed message is refused
with a ProtocolError that says what is wrong (and carries the id when one could be read)."""

from __future__ import annotations

import resource
from collections.abc import Callable

import msgpack
import numpy as np
import pytest

from hfd.client.errors import ProtocolError
from hfd.client.protocol import (
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    Reply,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    packb,
)
from hfd.client.types import EmbeddingResponse, vectors_from_frame


def test_request_round_trip_keeps_body_and_binary_frames() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "héllo ✓"}],
        "max_tokens": 3,
        "temperature": 0.5,
    }
    req = Request(id="r1", op="chat.completions.create", body=body, frames=[b"\x00\x01", b""])
    frames = encode_request(req)
    assert len(frames) == 3
    assert decode_request(frames) == req


def test_reply_round_trip_and_finality() -> None:
    for kind, final in (("result", True), ("chunk", False), ("end", True), ("error", True), ("event", False)):
        reply = Reply(id="x", kind=kind, body={"a": [1, 2.5, None, True]}, frames=[b"raw"])
        back = decode_reply(encode_reply(reply))
        assert back == reply
        assert back.final is final


def test_header_carries_version_id_and_op() -> None:
    header = msgpack.unpackb(encode_request(Request(id="abc", op="health", body={}))[0], raw=False)
    assert header == {"v": PROTOCOL_VERSION, "id": "abc", "op": "health", "body": {}}


def test_missing_body_is_an_empty_map() -> None:
    assert decode_request([packb({"v": PROTOCOL_VERSION, "id": "a", "op": "health"})]).body == {}
    assert (
        decode_request([packb({"v": PROTOCOL_VERSION, "id": "a", "op": "health", "body": None})]).body == {}
    )


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty message"),
        ([b"\xc1"], "malformed msgpack"),  # 0xc1 is never valid msgpack
        ([b"\x92\x01"], "malformed msgpack"),  # an array cut short
        ([packb([1, 2])], "must be a msgpack map"),
        ([packb("text")], "must be a msgpack map"),
        ([packb({"v": 1, "op": "health"})], "'id' must be a non-empty string"),
        ([packb({"v": 1, "id": "", "op": "health"})], "'id' must be a non-empty string"),
        ([packb({"v": 1, "id": 7, "op": "health"})], "'id' must be a non-empty string"),
        ([msgpack.packb({1: "int key"})], "malformed msgpack"),  # strict_map_key: only str/bytes keys
    ],
)
def test_unreadable_requests_carry_no_id(frames: list[bytes], message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        decode_request(frames)
    assert "id" not in info.value.details
    assert info.value.code == "protocol_error"


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"v": 99, "id": "r", "op": "health"}, "unsupported protocol version 99"),
        ({"id": "r", "op": "health"}, "unsupported protocol version None"),
        ({"v": 1, "id": "r", "op": 5}, "'op' must be a string"),
        ({"v": 1, "id": "r"}, "'op' must be a string"),
        ({"v": 1, "id": "r", "op": "health", "body": [1]}, "'body' must be a map"),
        ({"v": 1, "id": "r", "op": "health", "body": "x"}, "'body' must be a map"),
    ],
)
def test_errors_after_the_id_carry_it_for_the_reply(header: dict[str, object], message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as info:
        decode_request([packb(header)])
    assert info.value.details == {"id": "r"}


def test_oversized_header_is_refused_before_decoding() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_request([b"\x00" * (MAX_HEADER_BYTES + 1)])


def _peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _array32(n: int, item: bytes, objects_per_item: int = 1) -> bytes:
    return b"\xdd" + (n * objects_per_item).to_bytes(4, "big") + item * n


@pytest.mark.parametrize(
    "bomb",
    [
        # One flat array of 4 M empty maps (1 byte each on the wire, ~70 bytes decoded).
        pytest.param(lambda: _array32(4 * 1024 * 1024, b"\x80"), id="flat"),
        # The same count split into arrays short enough for a per-container bound.
        pytest.param(lambda: b"\xdc\x00\x40" + _array32(64 * 1024, b"\x80") * 64, id="nested"),
        # Short strings and empty lists: every kind of small object counts.
        pytest.param(lambda: b"\xdc\x00\x40" + _array32(32 * 1024, b"\xa2ab\x90", 2) * 64, id="mixed"),
    ],
)
def test_a_header_of_millions_of_tiny_containers_is_refused_cheaply(bomb: Callable[[], bytes]) -> None:
    data = bomb()
    assert len(data) < MAX_HEADER_BYTES  # within the size bound: only the item bound stops it
    before = _peak_rss_kib()
    with pytest.raises(ProtocolError, match=r"more than 262144 items|max_array_len") as info:
        decode_request([data], max_items=256 * 1024)
    assert "id" not in info.value.details  # nothing was decoded far enough to answer it
    # Decoded in full, these are 300-600 MiB of objects; refused early, a few MiB at most.
    assert (_peak_rss_kib() - before) < 64 * 1024


def test_headers_within_the_item_bound_decode() -> None:
    body = {"model": "m", "input": ["x"] * 1000, "messages": [{"role": "user", "content": "y"}] * 100}
    frame = packb({"v": 1, "id": "r", "op": "embeddings.create", "body": body})
    # Each container and element counts (map entries twice): the header map 9, body 7,
    # the input list 1001, the message list 101, and 100 messages of 5.
    items = 9 + 7 + 1001 + 101 + 100 * 5
    assert decode_request([frame], max_items=items).body == body
    with pytest.raises(ProtocolError, match=f"more than {items - 1} items"):
        decode_request([frame], max_items=items - 1)


def test_a_header_too_short_to_exceed_the_item_bound_decodes_alike_without_counting() -> None:
    # Every object takes a byte and counts at most twice, so twice the bytes bounds the count:
    # from max_items = 2 x bytes on, the header is decoded without the counting hooks.
    frame = packb({"v": 1, "id": "r", "op": "x", "body": {"l": [[] for _ in range(40)]}})
    items = 9 + 3 + 41 + 40  # the header map, the body map, the list, its 40 empty lists
    assert items < 2 * len(frame)
    with pytest.raises(ProtocolError, match=f"more than {items - 1} items"):
        decode_request([frame], max_items=items - 1)  # counted
    for bound in (items, 2 * len(frame)):  # counted, then not
        assert decode_request([frame], max_items=bound).body == {"l": [[] for _ in range(40)]}


def test_header_size_bound_is_a_parameter() -> None:
    frame = packb({"v": 1, "id": "r", "op": "health", "body": {"x": "y" * 100}})
    assert decode_request([frame], max_header_bytes=len(frame)).op == "health"
    with pytest.raises(ProtocolError, match="exceeds"):
        decode_request([frame], max_header_bytes=len(frame) - 1)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (packb({"v": 1}) + b"x", "after the header"),
        (b"\x82\xa1v\x01", "cut short"),
        (b"\xc1", "malformed msgpack: \\w"),
        (b"\xdd\xff\xff\xff\xff", "max_array_len"),  # 4 G elements announced in 5 bytes
        (b"\xdb\xff\xff\xff\xff", "max_str_len|cut short"),  # a 4 GiB string announced
    ],
)
def test_malformed_msgpack_says_why(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_request([data])


def test_extension_types_do_not_decode_to_objects() -> None:
    # msgpack ext types (what a pickle-ish payload would need) come back as inert ExtType data.
    frame = packb({"v": 1, "id": "r", "op": "health", "body": {"x": msgpack.ExtType(1, b"payload")}})
    body = decode_request([frame]).body
    assert isinstance(body["x"], msgpack.ExtType)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([], "empty reply"),
        ([packb({"v": 1, "kind": "result"})], "string 'id'"),
        ([packb({"v": 2, "id": "a", "kind": "result"})], "daemon speaks protocol 2"),
        ([packb({"v": 1, "id": "a", "kind": 3})], "'kind' must be a string"),
        ([b"\xc1"], "malformed msgpack"),
    ],
)
def test_malformed_replies(frames: list[bytes], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_reply(frames)


def test_embedding_frame_is_little_endian_float32_row_major() -> None:
    vectors = np.arange(6, dtype=np.float32).reshape(2, 3) / 7
    frame = vectors.astype("<f4").tobytes()
    back = vectors_from_frame(frame, (2, 3))
    assert back.dtype == np.float32 and back.shape == (2, 3)
    np.testing.assert_array_equal(back, vectors)
    # Big-endian bytes would decode to different numbers: the byte order is part of the format.
    assert not np.array_equal(vectors_from_frame(vectors.astype(">f4").tobytes(), (2, 3)), vectors)


def test_embedding_reply_with_wrong_sizes_is_refused() -> None:
    frame = np.zeros((2, 3), dtype="<f4").tobytes()
    with pytest.raises(ProtocolError, match="expected 24"):
        vectors_from_frame(frame[:-4], (2, 3))
    with pytest.raises(ProtocolError, match="shape"):
        EmbeddingResponse.from_reply({"shape": "2x3"}, [frame])
    with pytest.raises(ProtocolError, match="data frames"):
        EmbeddingResponse.from_reply({"shape": [2, 3]}, [])
    ok = EmbeddingResponse.from_reply(
        {"shape": [2, 3], "model": "m", "usage": {"prompt_tokens": 4, "total_tokens": 4}}, [frame]
    )
    assert ok.embeddings.shape == (2, 3) and len(ok.data) == 2 and ok.data[1].index == 1
    assert ok.usage is not None and ok.usage.prompt_tokens == 4
