"""Timestamps of each hop a streamed token takes through ``hfd serve``, for
``scripts/one_stream_hops.py``: loaded into the daemon and its OpenVINO engine process through
``PYTHONPATH``, active only when ``HFD_HOP_TRACE`` names a file prefix. Each process appends its
records (``time.monotonic_ns``, one clock for every process on the box) to
``<prefix>.<pid>.json`` when it exits.

- engine process: each step's start and end, and when its output was written to the pipe;
- daemon: when ``PipelineProcess`` had read it, when the scheduler's worker handed the step's
  chunks to the event loop (after detokenizing), and when the loop put them in the streams.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from typing import Any

_PREFIX = os.environ.get("HFD_HOP_TRACE")
_records: dict[str, list[Any]] = {"step": [], "read": [], "deliver": [], "loop": []}


def _dump() -> None:
    if any(_records.values()):
        with open(f"{_PREFIX}.{os.getpid()}.json", "w") as f:
            json.dump(_records, f)


def _install() -> None:
    from hfd.backends import openvino_engine, openvino_pipe, openvino_process
    from hfd.daemon.scheduler import generation, streams

    step, send, read = (
        openvino_engine.PipelineEngine.step,
        openvino_pipe.Channel.send,
        openvino_process.PipelineProcess._read,
    )
    last: dict[str, int] = {}

    def traced_step(self: Any) -> Any:
        last["start"] = time.monotonic_ns()
        out = step(self)
        last["end"] = time.monotonic_ns()
        return out

    def traced_send(self: Any, message: dict[str, Any]) -> None:
        if "out" in message:
            message = {**message, "t": [last.get("start", 0), last.get("end", 0), time.monotonic_ns()]}
        send(self, message)

    def traced_read(self: Any, *, wakeable: bool = False) -> Any:
        frames = read(self, wakeable=wakeable)
        now = time.monotonic_ns()
        for f in frames:
            if "t" in f:
                tokens = sum(len(o[1]) for o in f.get("out", ()))
                _records["read"].append([*f["t"], now, tokens])
        return frames

    deliver, put_all = generation.deliver, streams._put_all

    def traced_deliver(items: Any) -> None:
        if items:
            _records["deliver"].append(
                [time.monotonic_ns(), sum(len(getattr(c, "token_ids", ())) for _, c in items)]
            )
        deliver(items)

    def traced_put_all(batch: Any) -> None:
        _records["loop"].append(
            [time.monotonic_ns(), sum(len(getattr(c, "token_ids", ())) for _, c in batch)]
        )
        put_all(batch)

    openvino_engine.PipelineEngine.step = traced_step  # type: ignore[method-assign]
    openvino_pipe.Channel.send = traced_send  # type: ignore[method-assign]
    openvino_process.PipelineProcess._read = traced_read  # type: ignore[method-assign]
    generation.deliver = traced_deliver  # type: ignore[assignment]
    streams._put_all = traced_put_all  # type: ignore[assignment]
    atexit.register(_dump)


if _PREFIX:
    try:
        _install()
    except Exception as exc:  # a trace that cannot install must say so, not pass silently
        print(f"hop trace not installed: {exc!r}", flush=True)
