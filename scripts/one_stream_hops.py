#!/usr/bin/env python3
"""One chat stream through ``hfd serve`` on OpenVINO, hop by hop, against the same pipeline
offline.

Starts a real daemon (the bench Llama, 64 tokens per request, fixed length) with
``scripts/one_stream_trace`` on its ``PYTHONPATH``, so the daemon and its engine process stamp
every step (``time.monotonic_ns``: one clock for every process). Then, in turns, streams one
request over HTTP (the client stamps each SSE chunk as it arrives) and runs one through the same
pipeline in this process (``LocalPipeline``, as ``scripts/bench`` drives it offline), so both
see the same load on a shared box; finally stops the daemon and reads the stamps back.

Prints, per token, the median time of each hop: the engine's step, step end -> written to the
pipe, pipe -> read by the daemon, read -> handed to the event loop (merge, detokenizing, stop
strings, chunks), -> put in the stream on the loop, -> SSE chunk at the client; and the tokens/s
served (first token to last, and whole request) against offline. Run from the repository root:
``.venv/bin/python scripts/one_stream_hops.py [--threads N] [--dtype float32] [--requests 5] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

TOKENS = 64


def _cpu(pid: int) -> float:
    """CPU seconds of one process alone (all its threads), from /proc; 0 once it is gone."""
    from bench_lib.load import process_cpu_split

    return (process_cpu_split(pid) or (0.0, 0.0))[0]


def _measure(model: Path, threads: int, dtype: str | None, requests: int, workdir: Path) -> dict[str, Any]:
    """Served and offline requests taken in turns (the box's load changes by the minute), with the
    daemon's and its engine process's CPU seconds for each served request."""
    import httpx
    from bench_lib.offline import run_batch
    from bench_lib.workload import chat_messages

    from hfd.backends.base import LoadOptions, SamplingParams
    from hfd.backends.registry import get_backend
    from tests.support.daemon import start_daemon

    env = {
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO / "scripts" / "one_stream_trace"), os.environ.get("PYTHONPATH")) if p
        ),
        "HFD_HOP_TRACE": str(workdir / "trace"),
    }
    config = (
        f'[[models]]\nname = "llm"\nref = "{model}"\ntask = "generate"\npreload = true\nkeep_alive = -1\n'
    ) + (f'options = {{ dtype = "{dtype}" }}\n' if dtype else "")
    args = ["--log-level", "warning", "--cache-dir", str(REPO / ".cache" / "bench"), "--engine", "openvino"]
    if threads:
        args += ["--threads", str(threads)]
    from hfd.daemon.models.threads import auto_threads

    opts = LoadOptions(path=model, task="generate", threads=threads or auto_threads(engine="openvino"), cache_dir=REPO / ".cache" / "bench", dtype=dtype,
                       extra={"pipeline_process": False})  # fmt: skip
    local = get_backend("openvino").load_generator(opts)
    params = SamplingParams(max_tokens=TOKENS, temperature=0.0, ignore_eos=True, min_tokens=TOKENS)
    daemon = start_daemon(workdir / "d", {}, extra_config=config, args=args, env=env, timeout=600)
    from bench_lib.load import proc_parents, settle

    engine_pid = next(pid for pid, parent in proc_parents().items() if parent == daemon.proc.pid)
    runs: list[dict[str, Any]] = []
    offline: list[float] = []
    try:
        settle(daemon.proc.pid)  # the daemon's background imports (hfd.backends.preload) are not measured
        with httpx.Client(base_url=daemon.http, timeout=120) as client:
            for i in range(requests + 1):  # the first of each is a warm-up
                body = {"model": "llm", "messages": chat_messages(), "max_tokens": TOKENS, "temperature": 0,
                        "stream": True, "ignore_eos": True, "min_tokens": TOKENS}  # fmt: skip
                cpu = (_cpu(daemon.proc.pid), _cpu(engine_pid))
                sent = time.monotonic_ns()
                chunks: list[int] = []
                with client.stream("POST", "/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if line.startswith("data: {") and '"content"' in line:
                            chunks.append(time.monotonic_ns())
                done = time.monotonic_ns()
                produced, seconds = run_batch(local, [local.apply_chat_template(chat_messages())], params)
                if i:
                    runs.append({"sent": sent, "chunks": chunks, "done": done,
                                 "daemon_cpu": _cpu(daemon.proc.pid) - cpu[0], "engine_cpu": _cpu(engine_pid) - cpu[1]})  # fmt: skip
                    offline.append(produced / seconds)
    finally:
        daemon.stop()
        local.close()
    records: dict[str, list[Any]] = {"step": [], "read": [], "deliver": [], "loop": []}
    for f in workdir.glob("trace.*.json"):
        for key, rows in json.loads(f.read_text()).items():
            records[key] += rows
    if not records["read"]:
        raise SystemExit("no trace records: the trace hook did not load (see the daemon's output)")
    return {"runs": runs, "records": records, "offline": offline}


def _hops(served: dict[str, Any]) -> dict[str, float]:
    """Median per-step hop times (ms) over the measured requests' windows."""
    rec = served["records"]
    reads = sorted(rec["read"], key=lambda r: r[3])
    delivers = sorted(rec["deliver"])
    loops = sorted(rec["loop"])
    hops: dict[str, list[float]] = {k: [] for k in ("engine step", "step end -> pipe write", "pipe -> daemon read",
                                                    "read -> handed to loop", "handed -> put on loop", "loop -> SSE at client")}  # fmt: skip
    for run in served["runs"]:
        window = [r for r in reads if run["sent"] <= r[3] <= run["done"]]
        for r in window:
            start, end, written, read, _tokens = r
            hops["engine step"].append(end - start)
            hops["step end -> pipe write"].append(written - end)
            hops["pipe -> daemon read"].append(read - written)
            d = next((x[0] for x in delivers if x[0] >= read), None)
            if d is None:
                continue
            hops["read -> handed to loop"].append(d - read)
            lp = next((x[0] for x in loops if x[0] >= d), None)
            if lp is None:
                continue
            hops["handed -> put on loop"].append(lp - d)
            c = next((x for x in run["chunks"] if x >= lp), None)
            if c is not None:
                hops["loop -> SSE at client"].append(c - lp)
    return {k: round(statistics.median(v) / 1e6, 3) for k, v in hops.items() if v}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=0, help="engine threads (0: the daemon's automatic choice)")
    p.add_argument(
        "--dtype", default=None, help="the model's dtype option (float32: f32 compute), both sides"
    )
    p.add_argument("--requests", type=int, default=5)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    args = p.parse_args()
    from hfd.daemon.models.threads import auto_threads
    from tests.support.models import bench_llama

    threads = args.threads or auto_threads(engine="openvino")
    model = bench_llama()
    with tempfile.TemporaryDirectory(prefix="hfd-hops-") as tmp:
        m = _measure(model, args.threads, args.dtype, args.requests, Path(tmp))
    runs = m["runs"]
    whole = [TOKENS / ((r["done"] - r["sent"]) / 1e9) for r in runs]
    steady = [(len(r["chunks"]) - 1) / ((r["chunks"][-1] - r["chunks"][0]) / 1e9) for r in runs]
    offline = statistics.median(m["offline"])
    result = {
        "threads": threads,
        "dtype": args.dtype or "the default",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "offline_tokens_per_s": round(offline, 1),
        "offline_each": [round(x, 1) for x in m["offline"]],
        "served_tokens_per_s": round(statistics.median(whole), 1),
        "served_each": [round(x, 1) for x in whole],
        "served_first_to_last_tokens_per_s": round(statistics.median(steady), 1),
        "served_vs_offline": round(statistics.median(whole) / offline, 3),
        "served_vs_offline_each": [round(w / o, 3) for w, o in zip(whole, m["offline"], strict=True)],
        "daemon_cpu_ms_per_token": round(1000 * statistics.median(r["daemon_cpu"] for r in runs) / TOKENS, 3),
        "engine_cpu_ms_per_token": round(1000 * statistics.median(r["engine_cpu"] for r in runs) / TOKENS, 3),
        "hops_ms_median": _hops(m),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
