"""A benchmark's failed request is recorded with the transport error under the SDK's: "Connection
error." alone cannot tell a server closing a kept-alive connection from a refused connect."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from bench_lib.load import describe_error  # noqa: E402


class APIConnectionError(Exception):
    pass


def test_a_wrapped_transport_error_is_named() -> None:
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as exc:
            raise APIConnectionError("Connection error.") from exc
    except APIConnectionError as exc:
        text = describe_error(exc)
    assert (
        text
        == "APIConnectionError: Connection error. <- ConnectionResetError: [Errno 104] Connection reset by peer"
    )


def test_a_plain_error_and_a_cycle_stay_short() -> None:
    assert describe_error(ValueError("bad")) == "ValueError: bad"
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__cause__, b.__cause__ = b, a  # a chain that loops is cut after three causes
    assert describe_error(a).count("<-") == 3
