"""The framed pipe protocol between the daemon and an OpenVINO engine process
(``openvino_process``): each message is a little-endian u32 length and a msgpack map.

Here: framing (``frame``, ``split_frames``), one sequence's step output and how several steps'
outputs merge (``Output``, ``merge``), the child's ends of the pipes (``Channel``), which
never blocks on writing without also reading, and the child's pacing of its outputs (``Pacer``).
"""

from __future__ import annotations

import os
import select
import struct
from typing import Any, Final

import msgpack

_LENGTH: Final = struct.Struct("<I")
_CHUNK: Final = 1 << 16

# One sequence's output of a step: id, new tokens, finish reason, their logprobs (when asked),
# the prompt's logprobs (on the first output of an echo request; the first entry a placeholder).
Output = tuple[int, list[int], "str | None", "list[float] | None", "list[float] | None"]


def frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


def split_frames(buffer: bytearray) -> list[dict[str, Any]]:
    """Remove and decode the complete messages at the start of ``buffer``."""
    frames: list[dict[str, Any]] = []
    while len(buffer) >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer)
        if len(buffer) < _LENGTH.size + size:
            break
        message = msgpack.unpackb(
            bytes(buffer[_LENGTH.size : _LENGTH.size + size]), raw=False, strict_map_key=False
        )
        del buffer[: _LENGTH.size + size]
        if not isinstance(message, dict):
            raise ValueError("a message that is not a map")
        frames.append(message)
    return frames


def readable(fd: int, timeout: float | None) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def read_chunk(fd: int) -> bytes:
    """What is in the pipe, up to one chunk (waits without the GIL)."""
    return os.read(fd, _CHUNK)


def merge(
    prev: Output | None, seq_id: int, tokens: list[int], finished: str | None, lps: Any, prompt: Any
) -> Output:
    """Several child steps' outputs for one sequence as one."""
    if prev is None:
        return (seq_id, [int(t) for t in tokens], finished, lps, prompt)
    merged_lps = None if prev[3] is None and lps is None else list(prev[3] or []) + list(lps or [])
    return (seq_id, prev[1] + [int(t) for t in tokens], finished, merged_lps, prev[4] or prompt)


class Channel:
    """The child's ends of the pipes: reads into an inbox, writes while still reading."""

    def __init__(self, rx: int, tx: int) -> None:
        self._rx, self._tx = rx, tx
        self._buffer = bytearray()
        self.inbox: list[dict[str, Any]] = []
        self.closed = False

    def receive(self, timeout: float | None) -> None:
        """Move what the parent sent into the inbox, waiting up to ``timeout`` (None: for ever)."""
        while not self.closed and readable(self._rx, timeout):
            data = read_chunk(self._rx)
            if not data:
                self.closed = True
            self._buffer += data
            self.inbox.extend(split_frames(self._buffer))
            timeout = 0

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(frame(message))
        while data:
            ready, writable, _ = select.select([] if self.closed else [self._rx], [self._tx], [])
            if ready:
                self.receive(0)
            if writable:
                data = data[os.write(self._tx, data[:_CHUNK]) :]


class Pacer:
    """The child's step outputs, sent at most once per ``interval_s`` (``LoadOptions.stream_interval_ms``):
    each message then carries every step since the last, and the daemon, which merges a read's
    messages per sequence anyway, wakes once per interval instead of once per token. A
    sequence's first output, its last (a finish reason, a failure) and the last output before
    the pipeline goes idle are sent at once, with everything held."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._held: list[list[Any]] = []
        self._started: set[int] = set()  # sequences whose first output was sent and not the last
        self._sent_at = float("-inf")

    def take(self, outputs: list[list[Any]], *, idle: bool, now: float) -> list[list[Any]]:
        """What to send now (``outputs`` after what was held; empty: hold them)."""
        urgent = idle or now - self._sent_at >= self.interval_s
        for seq_id, _tokens, finished, *_ in outputs:
            if finished is not None:
                urgent = True
                self._started.discard(seq_id)
            elif seq_id not in self._started:
                urgent = True
                self._started.add(seq_id)
        self._held += outputs
        if not urgent or not self._held:
            return []
        sent, self._held = self._held, []
        self._sent_at = now
        return sent

    def forget(self, seq_id: int) -> None:
        """A sequence the daemon cancelled: no last output of it will come."""
        self._started.discard(seq_id)
