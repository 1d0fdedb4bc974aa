#!/usr/bin/env python3
"""The daemon's own CPU per generated token at N concurrent streams, apart from its engine's.

Starts a real ``hfd serve`` with the bench Llama (as ``scripts/bench`` does), then per door
(HTTP with the ``openai`` client, IPC with ``hfd.client.AsyncClient``) runs ``--streams``
closed-loop clients of 64-token chats and reads, from /proc, the CPU seconds of the daemon
process itself (its event loop, the doors, the scheduler's thread, detokenizing) and of its
engine processes. On a two-core box every millisecond of the first is taken from the engine.

``--engine fake`` serves the fake engine (``hfd.backends.fake_backend``: no model, each step
taking ``--step-ms``, in the daemon's process): the daemon's CPU is then the serving path's alone,
unmixed with an engine's, for comparing changes to the doors and the scheduler.

``--profile DIR`` also samples the daemon with ``py-spy`` (``pip install py-spy`` into the venv;
not a dependency) during each door's run and prints where its CPU went: the functions with the
most samples of their own, and the share of samples under the serving path's stages. The
collapsed stacks stay in ``DIR/<door>.txt`` (flame-graph input).

Run from the repository root: ``.venv/bin/python scripts/serving_cpu.py [--streams 32]
[--rounds 2] [--doors http,ipc] [--engine openvino] [--threads N] [--profile DIR] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

TOKENS = 64
MODEL = "bench-llm"
# Stages of the serving path, by a function name (or file) on the stack: a sample counts for
# every stage it is under (the shares overlap where stages nest).
STAGES = {
    "scheduler thread": "GenerationScheduler._run (",
    "engine step (waiting, reading the pipe)": "GenerationScheduler._step (",
    "scheduler: tokens to chunks (detokenizing, stop strings)": "GenerationScheduler._on_output (",
    "scheduler: hand-off to the loop": "deliver (daemon/scheduler/streams.py",
    "stream put on the loop": "_put_all (daemon/scheduler/streams.py",
    "HTTP: SSE stream": "EventStream.__call__ (daemon/http/sse.py",
    "HTTP: SSE event JSON": "encode_event (daemon/http/sse.py",
    "HTTP: h11 / uvicorn": "h11_impl.py",
    "IPC: stream": "IpcServer._stream (daemon/zmq/server.py",
    "chunk bodies": "_chunks (daemon/",
    "usage log": "UsageLog.",
    "metrics": "daemon/metrics.py",
    "event loop's select": "EpollSelector.select",
}


def _start(workdir: Path, engine: str, threads: int, step_ms: float) -> Any:
    from tests.support.daemon import start_daemon
    from tests.support.models import bench_llama

    config = f'[[models]]\nname = "{MODEL}"\ntask = "generate"\npreload = true\nkeep_alive = -1\n'
    args = ["--log-level", "warning", "--cache-dir", str(REPO / ".cache" / "bench")]
    if engine == "fake":  # no model: every CPU-second of the daemon is the serving path's own
        config += f'ref = "{workdir}"\nengine = "fake"\noptions = {{ step_ms = {step_ms} }}\n'
    else:
        config += f'ref = "{bench_llama()}"\n'
        args += ["--engine", engine]
    if threads:
        args += ["--threads", str(threads)]
    return start_daemon(workdir, {}, extra_config=config, args=args, timeout=600)


def _box_cpu() -> tuple[float, float]:
    """The box's busy CPU seconds (every core, every process) and of them those at a positive
    nice (builds at ``nice -n 19``), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / hz, nice / hz


def _user_system(pid: int) -> tuple[float, float]:
    """The process's user and system CPU seconds (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    hz = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / hz, int(fields[12]) / hz


def _thread_names(pid: int) -> dict[int, str]:
    """Python's names of a process's threads by native id (``py-spy dump``; Python 3.11 leaves
    every thread's OS name "python"); {} without py-spy."""
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).is_file():
        return {}
    try:
        dump = subprocess.run([found, "dump", "--pid", str(pid), "--json", "--nonblocking"],
                              capture_output=True, timeout=30, check=True).stdout  # fmt: skip
        return {
            int(t["os_thread_id"]): str(t.get("thread_name") or t["os_thread_id"]) for t in json.loads(dump)
        }
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return {}


def _threads_cpu(pid: int, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds per thread name of a process (threads of one name summed; AnyIO's pool, for
    one), from /proc/<pid>/task: exact, where a sampling profiler only estimates. A thread's name
    is Python's where ``names`` has it, else its OS name."""
    out: dict[str, float] = collections.defaultdict(float)
    hz = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[name] += (int(fields[11]) + int(fields[12])) / hz
    return dict(out)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).is_file():
        raise SystemExit("--profile needs py-spy: .venv/bin/python -m pip install py-spy")
    return found


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    cmd = [_py_spy(), "record", "--pid", str(pid), "--rate", "200", "--nonblocking", "--threads",
           "--format", "raw", "--output", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _run_door(
    daemon: Any, door: str, streams: int, rounds: int, profile: Path | None
) -> dict[str, Any]:
    from bench_lib.drivers import http_chat, ipc_chat, ipc_client, openai_client
    from bench_lib.load import closed_loop, settle
    from bench_lib.workload import chat_messages

    client = openai_client(daemon.base_url, 2 * streams) if door == "http" else ipc_client(daemon.ipc)
    chat = http_chat if door == "http" else ipc_chat

    def request() -> Any:
        return chat(client, MODEL, chat_messages(), TOKENS)

    try:
        await request()  # warm-up: connections, first-call costs
        settle(daemon.proc.pid)
        spy = None
        if profile is not None:
            spy = _start_py_spy(daemon.proc.pid, profile / f"{door}.txt")
            await asyncio.sleep(1.0)  # py-spy attaches before the load starts
        names = _thread_names(daemon.proc.pid)
        box_before, us_before = _box_cpu(), _user_system(daemon.proc.pid)
        threads_before = _threads_cpu(daemon.proc.pid, names)
        level = await closed_loop(door, streams, streams * rounds, request, daemon.proc.pid)
        box_after, us_after = _box_cpu(), _user_system(daemon.proc.pid)
        threads_after = _threads_cpu(daemon.proc.pid, names)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    finally:
        await (client.close() if door == "http" else client.aclose())
    out = level.summary("tokens")
    tokens = out["tokens"] or 1
    own = level.daemon_own_cpu or 0.0
    engine = (level.daemon_cpu or 0.0) - own
    out["engine_cpu_s"] = round(engine, 3)
    out["engine_ms_per_token"] = round(1000 * engine / tokens, 3)
    out["client_ms_per_token"] = round(1000 * level.client_cpu / tokens, 3)
    # The daemon's own split: system time is its syscalls (socket writes, wake-ups, the pipe).
    out["daemon_system_ms_per_token"] = round(1000 * (us_after[1] - us_before[1]) / tokens, 3)
    # Per thread: the event loop (both doors), the scheduler's worker, the usage log's writer...
    by_thread = {
        name: round(1000 * (cpu - threads_before.get(name, 0.0)) / tokens, 3)
        for name, cpu in threads_after.items()
    }
    out["daemon_thread_ms_per_token"] = {
        k: v for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v > 0
    }
    # Everything else on the box meanwhile: what competed with the engine for the cores.
    busy, niced = (after - before for after, before in zip(box_after, box_before, strict=True))
    out["box_busy_cores"] = round(busy / level.seconds, 2)
    out["others_cores"] = round((busy - (level.daemon_cpu or 0.0) - level.client_cpu) / level.seconds, 2)
    out["niced_cores"] = round(niced / level.seconds, 2)
    return out


def _profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """From py-spy's collapsed stacks: samples per thread, the top functions by own samples, and
    the share of the daemon's samples under each stage of ``STAGES``."""
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    stages: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        threads[frames[0]] += n
        own[frames[-1]] += n
        for stage, needle in STAGES.items():
            if needle in stack:
                stages[stage] += n
    return {
        "samples": total,
        "threads": dict(threads.most_common()),
        "stages_pct": {k: round(100 * v / total, 1) for k, v in stages.most_common()} if total else {},
        "top_own_pct": [(f, round(100 * n / total, 1)) for f, n in own.most_common(top)] if total else [],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2, help="requests per stream")
    p.add_argument("--doors", default="http,ipc")
    p.add_argument("--engine", default="openvino", choices=("openvino", "torch", "fake"))
    p.add_argument("--step-ms", type=float, default=30.0, help="the fake engine's step time")
    p.add_argument("--threads", type=int, default=0, help="engine threads (0: the daemon's automatic choice)")
    p.add_argument("--profile", type=Path, default=None, help="py-spy the daemon; collapsed stacks here")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    args = p.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "engine": args.engine,
        "streams": args.streams,
        "doors": {},
    }
    with tempfile.TemporaryDirectory(prefix="hfd-serving-cpu-") as tmp:
        daemon = _start(Path(tmp), args.engine, args.threads, args.step_ms)
        try:
            from bench_lib.served import ps

            row = next(m for m in ps(daemon.http) if m["name"] == MODEL)
            result["model"] = {k: v for k, v in row.items() if k not in ("scheduler",)}
            print("model:", json.dumps(result["model"]))
            for door in args.doors.split(","):
                result["doors"][door] = asyncio.run(
                    _run_door(daemon, door, args.streams, args.rounds, args.profile)
                )
        finally:
            daemon.stop()
    result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for door, row in result["doors"].items():
        print(f"{door}: {row['tokens_per_s']} tokens/s at {args.streams} streams; CPU ms per token: "
              f"daemon {row.get('daemon_own_ms_per_unit')} (system {row['daemon_system_ms_per_token']}), engine {row['engine_ms_per_token']}, "
              f"client {row['client_ms_per_token']}; box busy {row['box_busy_cores']} cores, "
              f"others {row['others_cores']} (niced {row['niced_cores']})")  # fmt: skip
        print(f"  daemon threads, CPU ms per token: {row['daemon_thread_ms_per_token']}")
        if args.profile is not None and (args.profile / f"{door}.txt").is_file():
            row["profile"] = _profile_summary(args.profile / f"{door}.txt")
            print(json.dumps(row["profile"], indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
