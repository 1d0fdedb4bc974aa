"""Several servers measured in interleaved rounds, so a shared box's drift falls on all alike.

These boxes are noisy: the same offline run spread 170-390 tokens/s within minutes. Measured
one after the other (hfd's levels, then each peer's), a ratio partly compared two moments of
the box. Here every server is up at once (idle ones cost nothing) and each level is run in
``rounds`` rounds, each round visiting every door in turn, in ABBA order (the second round
goes backwards; rounds come in pairs), so a steady drift weighs on each door alike. A door's figure is its rounds
merged (all its tokens over all its seconds); ``per_round`` keeps each round's, so a ratio can
be given with its spread over rounds (``round_ratios``).
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bench_lib.load import Level, Sample, closed_loop


@dataclass(frozen=True)
class Door:
    name: str  # "http", "ipc" (hfd's doors), "llama.cpp-f32", "infinity", ...
    request: Callable[[], Awaitable[Sample]]
    pid: int | None = None  # the server's process, whose CPU is counted


def merge(parts: list[Level]) -> Level:
    """One door's rounds at one level as one: seconds, samples, errors, retries and CPU summed."""
    first = parts[0]
    merged = Level(door=first.door, concurrency=first.concurrency, seconds=sum(p.seconds for p in parts))
    for part in parts:
        merged.samples += part.samples
        merged.errors += part.errors
        merged.retries += part.retries
        merged.client_cpu += part.client_cpu
    for name in ("daemon_cpu", "daemon_own_cpu"):
        values = [getattr(p, name) for p in parts]
        if all(v is not None for v in values):
            setattr(merged, name, sum(values))
    return merged


async def interleaved(
    doors: list[Door],
    levels: tuple[int, ...],
    rounds: int,
    per_round: Callable[[int], int],
    unit: str,
    failed: dict[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Each door's closed loop at each concurrency of ``levels``, ``per_round(c)`` requests in
    each of ``rounds`` rounds (an even number: ABBA needs pairs), after one warm-up request per
    door; per door, one summary per level (``Level.summary``) with ``per_round``: that round's
    ``unit`` per second. A door whose warm-up fails is left out and the others are measured;
    its entry in ``failed`` (when given) says why."""
    if rounds % 2:
        raise ValueError(f"rounds must be even (ABBA order): {rounds}")
    failed = {} if failed is None else failed
    for door in doors:
        try:
            await door.request()
        except Exception as exc:
            failed[door.name] = f"its warm-up request failed: {type(exc).__name__}: {exc}"
    doors = [door for door in doors if door.name not in failed]
    out: dict[str, list[dict[str, Any]]] = {door.name: [] for door in doors}
    for c in levels:
        parts: dict[str, list[Level]] = {door.name: [] for door in doors}
        for r in range(rounds):
            for door in doors if r % 2 == 0 else reversed(doors):
                parts[door.name].append(await closed_loop(door.name, c, per_round(c), door.request, door.pid))
        for door in doors:
            summary = merge(parts[door.name]).summary(unit)
            summary["rounds"] = rounds
            summary["per_round"] = [
                round(sum(s.units for s in p.samples) / p.seconds, 2) if p.seconds else 0.0
                for p in parts[door.name]
            ]
            out[door.name].append(summary)
    return out


def round_ratios(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float] | None:
    """The ratio of two doors' figures in each round (same level): its median, lowest and
    highest; None when either lacks rounds."""
    a, b = mine.get("per_round") or [], theirs.get("per_round") or []
    each = [x / y for x, y in zip(a, b, strict=False) if y]
    if not each:
        return None
    return {
        "median": round(statistics.median(each), 3),
        "min": round(min(each), 3),
        "max": round(max(each), 3),
    }
