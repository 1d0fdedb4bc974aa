"""The IPC wire protocol (documented in docs/protocol.md).

Transport: ZeroMQ ROUTER on the daemon, DEALER in the client, at an ``ipc://`` path.

A message is a multipart frame list::

    [header, *payload_frames]

``header`` is a msgpack map. A request header::

    {"v": 1, "id": "<request id>", "op": "<operation>", "body": {...}}

A reply header::

    {"v": 1, "id": "<request id>", "kind": "result" | "chunk" | "end" | "error" | "event",
     "body": {...}}

- ``result``: the one reply of a unary operation (final).
- ``chunk``: one piece of a stream; ``end`` closes the stream (final, may carry a body).
- ``event``: a progress event of a long operation (``models.pull``); it ends with ``result``.
- ``error``: final; ``body`` is the error object ``{"code", "message", "type", "param", ...}``.

Binary payloads travel as raw frames after the header, never inside msgpack: embeddings are
one frame of little-endian float32, row-major, shape ``body["shape"]``.

Cancelling: a request ``{"op": "cancel", "body": {"id": "<request id to cancel>"}}``; it has
no reply of its own; the cancelled request ends with an ``error`` of code ``cancelled``.

No pickle, ever: msgpack with ``raw=False`` and ``strict_map_key`` so only plain data decodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from hfd.client.errors import ProtocolError

PROTOCOL_VERSION: Final = 1

# Operations a daemon serves. Adding one is backwards compatible; renaming one is not.
OP_HEALTH: Final = "health"
OP_MODELS_LIST: Final = "models.list"
OP_MODELS_PS: Final = "models.ps"
OP_MODELS_LOAD: Final = "models.load"
OP_MODELS_UNLOAD: Final = "models.unload"
OP_MODELS_TUNE: Final = "models.tune"
OP_EMBEDDINGS: Final = "embeddings.create"
OP_CHAT: Final = "chat.completions.create"
OP_COMPLETIONS: Final = "completions.create"
OP_PULL: Final = "models.pull"
OP_HARDWARE: Final = "hardware"
OP_STATS: Final = "stats"
OP_CANCEL: Final = "cancel"
OP_TOKENIZE: Final = "tokenize"
OP_DETOKENIZE: Final = "detokenize"
OP_RERANK: Final = "rerank"
OP_SCORE: Final = "score"
OP_CLASSIFY: Final = "classify"
OP_NER: Final = "ner"
OP_TRANSCRIBE: Final = "audio.transcriptions.create"
OP_TRANSLATE: Final = "audio.translations.create"
# The Responses API (streamed: its events as ``event`` messages, then the response as ``result``).
OP_RESPONSES_CREATE: Final = "responses.create"
OP_RESPONSES_RETRIEVE: Final = "responses.retrieve"
OP_RESPONSES_DELETE: Final = "responses.delete"
OP_RESPONSES_INPUT_ITEMS: Final = "responses.input_items"

KIND_RESULT: Final = "result"
KIND_CHUNK: Final = "chunk"
KIND_END: Final = "end"
KIND_EVENT: Final = "event"
KIND_ERROR: Final = "error"
FINAL_KINDS: Final = frozenset({KIND_RESULT, KIND_END, KIND_ERROR})

# Bounds on a header (the daemon applies its [ipc] settings; these are the client's, for
# replies). Prompts travel in the header, so its size bound must stay above the largest
# prompt; what bounds the cost of decoding is the item count: msgpack's smallest encodings
# (an empty map is one byte) become Python objects ~70 times their size.
MAX_HEADER_BYTES: Final = 16 * 1024 * 1024
MAX_HEADER_ITEMS: Final = 1024 * 1024


@dataclass(frozen=True)
class Request:
    id: str
    op: str
    body: dict[str, Any]
    frames: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class Reply:
    id: str
    kind: str
    body: dict[str, Any]
    frames: list[bytes] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.kind in FINAL_KINDS


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


class _TooManyItems(Exception):
    pass


def unpackb(data: bytes, *, max_bytes: int = MAX_HEADER_BYTES, max_items: int = MAX_HEADER_ITEMS) -> Any:
    """Decode one msgpack header of at most ``max_bytes`` bytes and ``max_items`` items.

    Items are containers plus their elements (a map entry counts twice: key and value). Each
    container is counted as soon as it is decoded, so an oversized header is refused after
    decoding at most about ``max_items`` objects, never the whole of it.
    """
    if len(data) > max_bytes:
        raise ProtocolError(f"header of {len(data)} bytes exceeds {max_bytes}")
    left = max_items

    def spend(n: int) -> None:
        nonlocal left
        left -= n
        if left < 0:
            raise _TooManyItems

    def on_map(value: dict[Any, Any]) -> dict[Any, Any]:
        spend(1 + 2 * len(value))
        return value

    def on_list(value: list[Any]) -> list[Any]:
        spend(1 + len(value))
        return value

    # Every msgpack object takes a byte at least and is counted at most twice (as an element and
    # as a container), so a header of at most max_items / 2 bytes cannot go over the budget: it
    # is decoded without the counting hooks, a Python call per map and list (every streamed
    # chunk's header is such a one).
    hooks: dict[str, Any] = {"object_hook": on_map, "list_hook": on_list} if 2 * len(data) > max_items else {}
    unpacker = msgpack.Unpacker(
        raw=False,
        strict_map_key=True,
        max_buffer_size=max(1, len(data)),
        # One container may not hold more than the whole budget (checked before allocating).
        max_array_len=max_items,
        max_map_len=max_items,
        max_str_len=max_bytes,
        max_bin_len=max_bytes,
        max_ext_len=max_bytes,
        **hooks,
    )
    try:
        unpacker.feed(data)
        value = unpacker.unpack()
        if unpacker.tell() != len(data):
            raise ProtocolError(f"malformed msgpack: {len(data) - unpacker.tell()} bytes after the header")
    except _TooManyItems:
        raise ProtocolError(
            f"header has more than {max_items} items (maps, lists and their elements)"
        ) from None
    except ProtocolError:
        raise
    except msgpack.OutOfData:
        raise ProtocolError("malformed msgpack: the header is cut short") from None
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"malformed msgpack: {str(exc) or type(exc).__name__}") from exc
    return value


def encode_request(req: Request) -> list[bytes]:
    header = {"v": PROTOCOL_VERSION, "id": req.id, "op": req.op, "body": req.body}
    return [packb(header), *req.frames]


def decode_request(
    frames: list[bytes], *, max_header_bytes: int = MAX_HEADER_BYTES, max_items: int = MAX_HEADER_ITEMS
) -> Request:
    """Decode a request; raises ProtocolError with a message naming what is wrong.

    When the header decodes far enough to carry an id, the error is raised with
    ``details={"id": ...}`` so the daemon can address its error reply.
    """
    if not frames:
        raise ProtocolError("empty message")
    header = unpackb(frames[0], max_bytes=max_header_bytes, max_items=max_items)
    if not isinstance(header, dict):
        raise ProtocolError("header must be a msgpack map")
    rid = header.get("id")
    details = {"id": rid} if isinstance(rid, str) else None
    if not isinstance(rid, str) or not rid:
        raise ProtocolError("header field 'id' must be a non-empty string")
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {header.get('v')!r}; this daemon speaks {PROTOCOL_VERSION}",
            details=details,
        )
    op = header.get("op")
    if not isinstance(op, str):
        raise ProtocolError("header field 'op' must be a string", details=details)
    body = header.get("body", {})
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ProtocolError("header field 'body' must be a map", details=details)
    return Request(id=rid, op=op, body=body, frames=list(frames[1:]))


def encode_reply(reply: Reply) -> list[bytes]:
    header = {"v": PROTOCOL_VERSION, "id": reply.id, "kind": reply.kind, "body": reply.body}
    return [packb(header), *reply.frames]


def decode_reply(frames: list[bytes]) -> Reply:
    if not frames:
        raise ProtocolError("empty reply")
    header = unpackb(frames[0])
    if not isinstance(header, dict) or not isinstance(header.get("id"), str):
        raise ProtocolError("reply header must be a map with a string 'id'")
    if header.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"daemon speaks protocol {header.get('v')!r}, this client {PROTOCOL_VERSION}")
    kind = header.get("kind")
    if not isinstance(kind, str):
        raise ProtocolError("reply header field 'kind' must be a string")
    body = header.get("body") or {}
    return Reply(id=header["id"], kind=kind, body=body, frames=list(frames[1:]))
