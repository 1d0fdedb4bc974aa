"""Property-based fuzzing of the IPC door against a real ``hfd serve`` and its real socket.

Random multipart frame lists, random msgpack headers (wrong types, unknown operations, huge
integers, nested containers, NaN), operation bodies with random values, and raw frames that do
not belong to their header. For every message: the daemon answers exactly what the protocol
says (an ``error`` with a stable code when the header carries an id, nothing when it cannot be
read), never ``internal_error``, and keeps serving. Bounded to about a minute in all.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.daemon import Daemon
from support.daemon_fixtures import module_daemon
from support.models import tiny_bert

from hfd.client.errors import ProtocolError
from hfd.client.protocol import Reply, decode_reply, decode_request

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

EMBED = "emb"
# The daemon's [ipc] defaults: what it can decode, this test can.
HEADER_BYTES, HEADER_ITEMS = 8 * 1024 * 1024, 256 * 1024
# Operations cheap to call with any body (no pulls from the network, no unloads of the model).
OPS = [
    "health",
    "models.list",
    "models.ps",
    "models.load",
    "embeddings.create",
    "chat.completions.create",
    "completions.create",
    "stats",
    "cancel",
]
FIELDS = [
    "model",
    "input",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "keep_alive",
    "dimensions",
    "stream",
    "seed",
    "n",
    "stop",
    "encoding_format",
    "stream_options",
    "user",
    "cache",
    "id",
]
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure is reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.text(max_size=10), inner, max_size=6),
    ),
    max_leaves=30,
)
texts = st.one_of(st.text(min_size=1, max_size=60), st.sampled_from(["hello world", "\ud800", "a" * 500]))
field_values = st.one_of(
    values,
    texts,
    st.lists(texts, min_size=0, max_size=5),
    st.lists(st.integers(min_value=-5, max_value=40000), max_size=8),
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "system", "assistant", "tool"]), "content": values}
        ),
        max_size=4,
    ),
)
bodies = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), field_values, max_size=8
).map(lambda b: b if "model" not in b or b["model"] != "" else {**b, "model": EMBED})
model_bodies = st.builds(
    lambda b, m: {**b, "model": m}, bodies, st.one_of(st.just(EMBED), st.text(max_size=20))
)


def packable(obj: Any) -> bytes | None:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError):
        return None


daemon = module_daemon({EMBED: tiny_bert}, engine="torch", workdir="fuzz")


class Door:
    """One DEALER on the daemon's socket; checks each message's replies as it goes."""

    def __init__(self, endpoint: str) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.ids = itertools.count()
        self.dropped = 0  # messages the daemon could not read (logged, no reply)

    def reply(self, timeout: float = 60.0) -> Reply:
        assert self.sock.poll(int(timeout * 1000)), "the daemon did not answer"
        return decode_reply(self.sock.recv_multipart())

    def check(self, frames: list[bytes]) -> None:
        """Send ``frames``; expect what the protocol promises, then a health check to pass."""
        try:
            req = decode_request(frames, max_header_bytes=HEADER_BYTES, max_items=HEADER_ITEMS)
        except ProtocolError as exc:
            rid = exc.details.get("id")
            expected = rid if isinstance(rid, str) and rid else None
        else:
            expected = None if req.op == "cancel" else req.id
        if expected is None:
            self.dropped += 1
        self.sock.send_multipart(frames)
        ping = f"ping-{next(self.ids)}"
        self.sock.send_multipart([msgpack.packb({"v": 1, "id": ping, "op": "health"})])
        finals: dict[str, Reply] = {}
        while ping not in finals or (expected is not None and expected not in finals):
            r = self.reply()
            assert r.id in (ping, expected), f"a reply to {r.id!r}, which was not asked"
            if r.final:
                assert r.id not in finals, f"two final replies to {r.id!r}"
                finals[r.id] = r
        assert finals[ping].kind == "result" and finals[ping].body["status"] == "ok"
        if expected is not None:
            got = finals[expected]
            assert got.kind in ("result", "end", "error")
            if got.kind == "error":
                assert got.body.get("code") not in (None, "internal_error"), got.body
                assert isinstance(got.body.get("message"), str)

    def unique(self) -> str:
        return f"f{next(self.ids)}"

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


@pytest.fixture(scope="module")
def door(daemon: Daemon) -> Iterator[Door]:
    d = Door(daemon.ipc)
    # Loaded once up front, so examples measure the door, not a model load.
    d.check([msgpack.packb({"v": 1, "id": "load", "op": "models.load", "body": {"model": EMBED}})])
    yield d
    d.close()


@FUZZ
@given(frames=st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_random_frames(door: Door, frames: list[bytes]) -> None:
    door.check(frames)


@FUZZ
@given(
    header=st.dictionaries(
        st.one_of(st.sampled_from(["v", "id", "op", "body"]), st.text(max_size=6)), values, max_size=6
    ),
    fields=st.fixed_dictionaries(
        {},
        optional={
            "v": st.one_of(st.just(1), values),
            "op": st.one_of(st.sampled_from(OPS), st.text(max_size=20), values),
            "body": st.one_of(bodies, values),
        },
    ),
    with_id=st.sampled_from(["unique", "random", "absent"]),
)
def test_random_headers(door: Door, header: dict[str, Any], fields: dict[str, Any], with_id: str) -> None:
    header = {**header, **fields}
    if with_id == "unique":
        header["id"] = door.unique()
    elif with_id == "absent":
        header.pop("id", None)
    elif isinstance(header.get("id"), str):
        header["id"] = door.unique() + header["id"]  # never one already in flight
    frame = packable(header)
    if frame is not None:
        door.check([frame])


@FUZZ
@given(
    op=st.sampled_from(OPS),
    body=model_bodies,
    extra=st.lists(st.binary(max_size=64), max_size=3),
)
def test_operations_with_random_bodies_and_stray_frames(
    door: Door, op: str, body: dict[str, Any], extra: list[bytes]
) -> None:
    if op == "cancel":
        body = {"id": body.get("id", door.unique())}
    frame = packable({"v": 1, "id": door.unique(), "op": op, "body": body})
    if frame is not None:
        door.check([frame, *extra])


def test_after_the_fuzzing_the_daemon_serves_and_logged_what_it_dropped(daemon: Daemon, door: Door) -> None:
    assert daemon.proc.poll() is None
    frame = msgpack.packb(
        {"v": 1, "id": "final", "op": "embeddings.create", "body": {"model": EMBED, "input": ["a", "b"]}}
    )
    door.sock.send_multipart([frame])
    reply = door.reply()
    assert reply.kind == "result" and reply.body["shape"] == [2, 32]
    assert door.dropped > 0
    deadline = time.monotonic() + 30  # the daemon's output is read on a thread
    while not any("dropping an unreadable IPC message" in line for line in daemon.output):
        assert time.monotonic() < deadline, "the dropped messages were not logged"
        time.sleep(0.05)
    for bad in ("unexpected error while serving an IPC request", "failed to decode"):
        assert not any(bad in line for line in daemon.output), bad
