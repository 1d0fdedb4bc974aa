"""Closed-loop load: N clients, each sending its next request as soon as the last one ends."""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Sample:
    latency: float  # seconds, request sent to last byte
    units: int  # completion tokens (generation) or inputs (embeddings)
    ttft: float | None = None  # seconds to the first text (streams only)


@dataclass
class Level:
    door: str
    concurrency: int
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Requests sent again once: a kept-alive connection the server had closed (stale_connection)
    retries: list[str] = field(default_factory=list)
    daemon_cpu: float | None = None  # CPU seconds the daemon used (all its threads, its engine processes)
    daemon_own_cpu: float | None = None  # of which the daemon process itself, engine processes left out
    client_cpu: float = 0.0  # CPU seconds this process used driving the load

    def summary(self, unit: str) -> dict[str, Any]:
        lat = [s.latency for s in self.samples]
        ttft = [s.ttft for s in self.samples if s.ttft is not None]
        units = sum(s.units for s in self.samples)
        out: dict[str, Any] = {
            "door": self.door,
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "errors": len(self.errors),
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(len(self.samples) / self.seconds, 3) if self.seconds else 0.0,
            f"{unit}_per_s": round(units / self.seconds, 2) if self.seconds else 0.0,
            unit: units,
            "latency_p50_ms": ms(percentile(lat, 50)),
            "latency_p95_ms": ms(percentile(lat, 95)),
        }
        if self.daemon_cpu:
            out["daemon_cpu_s"] = round(self.daemon_cpu, 3)
            out[f"{unit}_per_daemon_cpu_s"] = round(units / self.daemon_cpu, 2)
        if self.daemon_own_cpu is not None and units:
            # What serving costs per unit on top of the engine (the doors, the scheduler's
            # thread, detokenizing): taken from the same cores the engine computes on.
            out["daemon_own_cpu_s"] = round(self.daemon_own_cpu, 3)
            out["daemon_own_ms_per_unit"] = round(1000 * self.daemon_own_cpu / units, 3)
        out["client_cpu_s"] = round(self.client_cpu, 3)
        if ttft:
            out["ttft_p50_ms"] = ms(percentile(ttft, 50))
            out["ttft_p95_ms"] = ms(percentile(ttft, 95))
        if self.errors:
            out["first_error"] = self.errors[0][:600]
        if self.retries:
            out["retried_stale_connections"] = len(self.retries)
        return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 2)


def _stat(pid: int | str) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system, all threads) a process and its living descendants have used,
    from /proc; None elsewhere. Descendants count because an engine may run in a child process
    (OpenVINO generation does)."""
    split = process_cpu_split(pid)
    return None if split is None else split[1]


def settle(pid: int, limit_s: float = 120.0) -> None:
    """Wait until a daemon is idle (under 5% of a core over half a second, its engine processes
    counted), at most ``limit_s``: its background imports of the engine libraries
    (``hfd.backends.preload``, several CPU-seconds) must not be measured with what runs beside."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = process_cpu_split(pid) or (0.0, 0.0)
        time.sleep(0.5)
        after = process_cpu_split(pid) or (0.0, 0.0)
        # The daemon's own CPU and its tree's: a child exiting meanwhile lowers the second.
        if after[0] - before[0] < 0.025 and max(0.0, after[1] - before[1]) < 0.025:
            return


def process_cpu_split(pid: int) -> tuple[float, float] | None:
    """CPU seconds of the process alone and of it with its living descendants, from one walk of
    /proc; None elsewhere."""
    if _stat(pid) is None:
        return None
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) is not None:
            # After the command name: ppid is field 4, utime and stime are fields 14 and 15.
            parents[int(entry.name)] = int(fields[1])
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree = {pid, *descendants(pid, parents)}
    hz = os.sysconf("SC_CLK_TCK")
    return ticks.get(pid, 0) / hz, sum(ticks.get(p, 0) for p in tree) / hz


def proc_parents() -> dict[int, int]:
    """Every living process's parent, from /proc: {pid: ppid}."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) is not None:
            parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int, parents: dict[int, int]) -> set[int]:
    """The descendants of ``pid`` in ``parents`` ({pid: ppid}), ``pid`` itself left out."""
    tree: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree and child != pid:
                tree.add(child)
                frontier.append(child)
    return tree


def describe_error(exc: BaseException) -> str:
    """A failed request, with what caused it: the SDKs' connection errors ("Connection error.")
    wrap the transport's own (a refused connect, a peer that closed a kept-alive connection, a
    read timeout), which is what tells a server's failure from the client's."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__ or exc.__context__
    depth = 0
    while cause is not None and depth < 3:
        text += f" <- {type(cause).__name__}: {cause}"
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    return text


def stale_connection(exc: BaseException) -> bool:
    """Whether a request failed because it went out on a kept-alive connection the server had
    already closed: the server sent no byte of a response (httpx's "Server disconnected without
    sending a response"), so it never ran the request. Clients resend such a request once (as
    browsers do); anything else is an error."""
    cause: BaseException | None = exc
    for _ in range(4):
        if cause is None:
            return False
        if type(cause).__name__ == "RemoteProtocolError" and "without sending a response" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


async def closed_loop(
    door: str,
    concurrency: int,
    total: int,
    request: Callable[[], Awaitable[Sample]],
    daemon_pid: int | None = None,
) -> Level:
    """Run ``total`` requests with ``concurrency`` clients; a failed request is recorded, not
    retried, except once when it met a stale kept-alive connection (``stale_connection``; counted
    in ``retried_stale_connections``; such a try fails at once, before the server reads it).

    CPU time is counted too (the daemon's from /proc, this process's own): on a shared, busy box
    work per CPU-second is steadier than work per wall-second."""
    issued = itertools.count()
    level = Level(door=door, concurrency=concurrency, seconds=0.0)

    async def client() -> None:
        while next(issued) < total:
            try:
                level.samples.append(await request())
            except Exception as exc:
                if not stale_connection(exc):
                    level.errors.append(describe_error(exc))
                    continue
                level.retries.append(describe_error(exc))
                try:
                    level.samples.append(await request())
                except Exception as again:
                    level.errors.append(describe_error(again))

    daemon_before = process_cpu_split(daemon_pid) if daemon_pid else None
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    level.seconds = time.perf_counter() - started
    level.client_cpu = time.process_time() - client_before
    daemon_after = process_cpu_split(daemon_pid) if daemon_pid else None
    if daemon_before is not None and daemon_after is not None:
        level.daemon_own_cpu = daemon_after[0] - daemon_before[0]
        level.daemon_cpu = daemon_after[1] - daemon_before[1]
    return level
