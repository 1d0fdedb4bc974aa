"""What each model being loaded is doing now, for ``hfd ps``.

A load goes through ``resolving`` (finding or pulling the snapshot), ``exporting`` (building the
engine's export into the export cache: OpenVINO IR, an ONNX graph; a lookup when it is cached),
``loading`` (the engine reading the model's files: tokenizer, config), ``compiling`` (the engine
compiling its graph: OpenVINO's compile, ONNX Runtime's session), ``warming`` (the engine's
warm-up batch: OpenVINO generation), then ``ready`` (the model's own ``hfd ps`` row). The engine
itself says when it compiles and warms up (``hfd.backends.load_progress``); an engine that says
nothing stays ``loading`` until it is ready.
A measurement of the model's candidate engines (``engine_choice``) shows each engine's
``exporting`` and ``loading``, then ``measuring`` while its workload runs.
Exports and compiles give no progress callback, so a phase carries its elapsed time and no
percent (``percent`` is None); nothing here estimates one from time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

State = Literal["resolving", "exporting", "compiling", "loading", "warming", "measuring"]
STATES: Final = ("resolving", "exporting", "compiling", "loading", "warming", "measuring", "ready")


@dataclass
class _Row:
    name: str
    state: State
    started: float  # the load's start
    state_started: float
    task: str = ""
    engine: str = ""
    device: str = ""


class LoadPhases:
    """The phase of each load in progress; set from the event loop and engine threads alike."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rows: dict[str, _Row] = {}
        self._lock = threading.Lock()

    def enter(self, name: str, state: State, *, task: str = "", engine: str = "", device: str = "") -> None:
        """``name`` is now in ``state`` (a load's first call starts its clock)."""
        now = self._clock()
        with self._lock:
            row = self._rows.get(name)
            if row is None:
                self._rows[name] = _Row(name, state, now, now, task, engine, device)
                return
            row.state, row.state_started = state, now
            row.task, row.engine, row.device = task or row.task, engine or row.engine, device or row.device

    def done(self, name: str) -> None:
        with self._lock:
            self._rows.pop(name, None)

    def state(self, name: str) -> str | None:
        with self._lock:
            row = self._rows.get(name)
            return None if row is None else row.state

    def rows(self) -> list[dict[str, Any]]:
        """One ``hfd ps`` row per load in progress."""
        now = self._clock()
        with self._lock:
            rows = list(self._rows.values())
        return [
            {
                "name": r.name,
                "task": r.task,
                "engine": r.engine,
                "device": r.device,
                "state": r.state,
                "elapsed_seconds": round(now - r.started, 3),
                "state_seconds": round(now - r.state_started, 3),
                "percent": None,  # no engine reports export or compile progress
            }
            for r in rows
        ]
