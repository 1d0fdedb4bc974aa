"""``scripts/bench soak [--minutes N]``: mixed traffic on both doors for minutes, and what it did
to the daemon.

One ``hfd serve`` (temporary state, a generation and an embedding model preloaded) gets
``--concurrency`` closed-loop clients, half on each door (the ``openai`` client over HTTP,
``hfd.client.AsyncClient`` over IPC). Each request is drawn from a seeded mix: streamed chat
completions, text completions, embeddings of a few sentences. Some clients hang up: a chat
stream closed after its first chunks, an embedding request of many inputs given up after a
moment (over HTTP the connection is closed; over IPC the client cancels). Hang-ups are counted,
never errors; everything else that fails is an error.

The report (``bench-results/soak[-quick].json``) has the requests and errors of each kind and
door; latency drift (p50/p95 of the first and the last window, a minute each, or a third of a
shorter run); and the resident memory (RSS) and open file descriptors of the daemon and of each
of its child processes (the OpenVINO engine processes) after warm-up, every few seconds, and at
the end; plus the in-flight gauge and ``/health`` once the load stopped. Exit status 1 when
there were errors or the daemon died.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench_lib import report
from bench_lib.drivers import ipc_client, openai_client
from bench_lib.load import descendants, proc_parents
from bench_lib.soak_report import KINDS, Outcome, print_summary, summary
from bench_lib.workload import chat_messages, sentence

REPO = Path(__file__).resolve().parents[2]
GEN_MODEL = "soak-llm"
EMBED_MODEL = "soak-embed"
WEIGHTS = (0.4, 0.3, 0.3)
HANGUP_CHUNKS = 2  # a hung-up stream reads this many chunks, then closes
HANGUP_EMBED_INPUTS = 64  # an embedding request given up on is this large ...
HANGUP_EMBED_AFTER = 0.05  # ... and abandoned after this many seconds


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench soak", description=__doc__)
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    p.add_argument("--quick", action="store_true", help="tiny models, 4 clients: a smoke run")
    p.add_argument("--concurrency", type=int, help="clients in all, half per door (default 32; quick: 4)")
    p.add_argument("--tokens", type=int, help="completion tokens per request (default 32; quick: 8)")
    p.add_argument(
        "--hangup", type=float, default=0.1, help="share of chat streams and embeddings hung up (0.1)"
    )
    p.add_argument("--engine", choices=("torch", "openvino", "onnxruntime"), help="pin the engine")
    p.add_argument("--threads", type=int, default=0, help="engine threads (0: the daemon's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc)."""
    return sorted(descendants(pid, proc_parents()))


def _process(pid: int) -> dict[str, Any] | None:
    """RSS (MiB), open file descriptors and threads of one process; None when it is gone."""
    try:
        status = (Path(f"/proc/{pid}") / "status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        comm = (Path(f"/proc/{pid}") / "comm").read_text().strip()
        cmdline = (Path(f"/proc/{pid}") / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields.get("VmRSS", "0 kB").split()[0])
    return {
        "pid": pid,
        "name": comm,
        "command": cmdline[:160],
        "rss_mib": round(rss_kib / 1024, 1),
        "fds": fds,
        "threads": int(fields.get("Threads", "0").strip() or 0),
    }


def resources(pid: int) -> dict[str, Any]:
    """The daemon and each of its child processes, now."""
    return {
        "t": round(time.time(), 3),
        "daemon": _process(pid),
        "children": [p for c in _children(pid) if (p := _process(c)) is not None],
    }


# ----------------------------------------------------------------------------- the load


@dataclass
class Soak:
    http: Any
    ipc: Any
    tokens: int
    hangup: float
    deadline: float
    began: float
    outcomes: list[Outcome] = field(default_factory=list)

    def _now(self) -> float:
        return time.perf_counter() - self.began

    async def chat(self, door: str, hang_up: bool) -> tuple[float | None, bool]:
        kw: dict[str, Any] = {"ignore_eos": True, "min_tokens": self.tokens}
        messages = chat_messages()
        started = time.perf_counter()
        ttft: float | None = None
        chunks = 0
        if door == "http":
            stream = await self.http.chat.completions.create(
                model=GEN_MODEL, messages=messages, max_tokens=self.tokens, temperature=0, stream=True,
                extra_body=kw,
            )  # fmt: skip
            try:
                async for chunk in stream:
                    if any(c.delta.content for c in chunk.choices):
                        chunks += 1
                        ttft = ttft if ttft is not None else time.perf_counter() - started
                    if hang_up and chunks >= HANGUP_CHUNKS:
                        return ttft, True  # closing the response closes the connection mid-stream
            finally:
                await stream.close()
        else:
            stream = await self.ipc.chat.completions.create(
                model=GEN_MODEL, messages=messages, max_tokens=self.tokens, temperature=0, stream=True, **kw
            )
            async with stream:  # leaving early cancels the stream
                async for chunk in stream:
                    if any(c.delta.content for c in chunk.choices):
                        chunks += 1
                        ttft = ttft if ttft is not None else time.perf_counter() - started
                    if hang_up and chunks >= HANGUP_CHUNKS:
                        return ttft, True
        return ttft, False

    async def completion(self, door: str) -> None:
        prompt = chat_messages()[0]["content"]
        client = self.http if door == "http" else self.ipc
        kw: dict[str, Any] = {"ignore_eos": True, "min_tokens": self.tokens}
        if door == "http":
            result = await client.completions.create(
                model=GEN_MODEL, prompt=prompt, max_tokens=self.tokens, temperature=0, extra_body=kw
            )
        else:
            result = await client.completions.create(
                model=GEN_MODEL, prompt=prompt, max_tokens=self.tokens, temperature=0, **kw
            )
        assert result.choices and result.choices[0].text is not None

    async def embed(self, door: str, hang_up: bool) -> bool:
        client = self.http if door == "http" else self.ipc
        texts = [sentence() for _ in range(HANGUP_EMBED_INPUTS if hang_up else 4)]
        call = client.embeddings.create(model=EMBED_MODEL, input=texts)
        if hang_up:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(call, HANGUP_EMBED_AFTER)  # the client goes away
            return True
        result = await call
        assert len(result.data) == len(texts)
        return False

    async def one(self, door: str, kind: str, rng: random.Random) -> None:
        hang_up = kind != "completion" and rng.random() < self.hangup
        start = self._now()
        t0 = time.perf_counter()
        out = Outcome(door, kind, start, start, 0.0)
        try:
            if kind == "chat":
                out.ttft, out.hung_up = await self.chat(door, hang_up)
            elif kind == "completion":
                await self.completion(door)
            else:
                out.hung_up = await self.embed(door, hang_up)
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"[:300]
        out.latency = time.perf_counter() - t0
        out.end = self._now()
        self.outcomes.append(out)

    async def client(self, index: int, seed: int) -> None:
        door = "http" if index % 2 == 0 else "ipc"
        rng = random.Random(seed * 1000 + index)
        while time.perf_counter() < self.deadline:
            await self.one(door, rng.choices(KINDS, WEIGHTS)[0], rng)


async def _watch(pid: int, every: float, until: float, into: list[dict[str, Any]]) -> None:
    while time.perf_counter() < until:
        await asyncio.sleep(min(every, max(0.0, until - time.perf_counter())))
        into.append(await asyncio.to_thread(resources, pid))


async def _after(http: str) -> dict[str, Any]:
    """``/health`` and the in-flight gauge once the load stopped (both should be idle)."""
    async with httpx.AsyncClient(timeout=30) as client:
        health = await client.get(http + "/health")
        text = (await client.get(http + "/metrics")).text
    in_flight: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("hfd_requests_in_flight{"):
            labels, value = line.rsplit(" ", 1)
            door = labels.split('door="', 1)[1].split('"', 1)[0] if 'door="' in labels else labels
            # The /metrics request itself is in flight on the HTTP door while it is answered.
            in_flight[door] = float(value) - (1.0 if door == "http" else 0.0)
    return {"health_status": health.status_code, "in_flight": in_flight}


async def run_load(daemon: Any, args: argparse.Namespace, concurrency: int, tokens: int) -> dict[str, Any]:
    http = openai_client(daemon.base_url, 2 * concurrency)
    ipc = ipc_client(daemon.ipc)
    seconds = max(1.0, args.minutes * 60)
    try:
        warm = Soak(http, ipc, tokens, 0.0, 0.0, time.perf_counter())
        for door in ("http", "ipc"):  # warm-up: connections, first-call costs, engine caches
            for kind in KINDS:
                await warm.one(door, kind, random.Random(0))
        if failed := [o.error for o in warm.outcomes if o.error]:
            raise RuntimeError(f"warm-up failed: {failed[0]}")
        start_res = resources(daemon.proc.pid)
        began = time.perf_counter()
        soak = Soak(http, ipc, tokens, args.hangup, began + seconds, began)
        series: list[dict[str, Any]] = [start_res]
        watcher = asyncio.create_task(
            _watch(daemon.proc.pid, max(2.0, seconds / 30), began + seconds, series)
        )
        await asyncio.gather(*(soak.client(i, args.seed) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        await http.close()
        await ipc.aclose()
    # Measured with the clients gone (their keep-alive connections closed) and the hang-ups and
    # cancellations through the scheduler: what is left is what the daemon kept.
    await asyncio.sleep(1.0)
    end_res = resources(daemon.proc.pid)
    after = await _after(daemon.http)
    return summary(soak.outcomes, elapsed, start_res, end_res, series) | {
        "after": after | {"daemon_alive": daemon.proc.poll() is None}
    }


# ----------------------------------------------------------------------------- entry


def main(argv: list[str]) -> int:
    from bench_lib.main import _meta, _rel, _start_daemon
    from bench_lib.workload import full_plan, quick_plan

    args = parse_args(argv)
    plan = quick_plan() if args.quick else full_plan()
    concurrency = args.concurrency or (4 if args.quick else 32)
    tokens = args.tokens or (8 if args.quick else 32)
    if concurrency < 2:
        raise SystemExit("--concurrency must be at least 2 (one client per door)")
    models = {GEN_MODEL: (plan.gen_model(), "generate"), EMBED_MODEL: (plan.embed_model(), "embed")}
    from hfd.daemon.models.threads import auto_threads, available_cores

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hfd-soak-") as tmp:
        daemon = _start_daemon(Path(tmp), models, args, REPO / ".cache" / "bench")
        try:
            results["meta"] = _meta(
                args, plan, args.engine or "auto", args.threads or auto_threads(), available_cores(),
                ["--soak", *argv],
            )  # fmt: skip
            engines = {
                m["name"]: m["engine"]
                for m in httpx.get(daemon.http + "/api/ps", timeout=30).json()["models"]
            }
            results["meta"].update(
                engines=engines,
                concurrency=concurrency,
                tokens=tokens,
                hangup=args.hangup,
                minutes=args.minutes,
            )
            print(
                f"hfd soak: {args.minutes} min, {concurrency} clients ({concurrency // 2 + concurrency % 2} HTTP, "
                f"{concurrency // 2} IPC), {', '.join(f'{k} on {v}' for k, v in engines.items())}"
            )
            results["soak"] = asyncio.run(run_load(daemon, args, concurrency, tokens))
            print_summary(results["soak"])
        except BaseException:
            print("\n".join(daemon.output[-30:]), file=sys.stderr)
            raise
        finally:
            code = daemon.stop()
    results["meta"]["daemon_exit"] = code
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = args.out_dir / ("soak-quick.json" if args.quick else "soak.json")
    report.write_json(path, results)
    print(f"\nwrote {_rel(path)}")
    soak = results["soak"]
    return 0 if soak["errors"] == 0 and soak["after"]["daemon_alive"] and code == 0 else 1
