"""Benchmark the response cache and the memory budget of a real ``hfd serve``.

Two parts, both over the daemon's OpenAI-compatible HTTP door (the ``openai``-shaped bodies
are sent with httpx, one request at a time):

- ``cache``: one embeddings request (all-MiniLM-L6-v2, ``--sentences`` sentences) computed with
  ``"cache": false`` and served from the cache, ``--repeats`` times each, interleaved; reports
  the median latencies and their ratio.
- ``memory``: three models (two copies of the 56M-parameter bench Llama and MiniLM) under a
  RAM budget that fits two but not three, requested in rotation for ``--rounds`` rounds: at each
  step ``--concurrency`` concurrent requests for one model plus one for the previous model. The
  daemon's resident set (``/proc/<pid>/status`` VmRSS) is sampled every 20 ms. The overhead is
  what the process holds besides its models, measured before the rotation: the RSS once the
  engine's libraries are imported and a model was loaded and unloaded again (interpreter,
  torch/transformers, allocator caches). Reports the peak RSS against ``budget + overhead``, the
  peak reserved bytes against the budget (from ``/api/ps``), and the RSS after the rotation once
  every model is unloaded (what does not go back to the OS).

Results go to ``bench-results/cache.json``. Run: ``.venv/bin/python scripts/bench cache``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_lib.cli import subcommand_parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

MiB = 1024 * 1024


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("cache", __doc__)
    p.add_argument("--only", choices=("cache", "memory"), help="run one part")
    p.add_argument(
        "--engine",
        default="torch",
        choices=("torch", "openvino", "onnxruntime"),
        help="engine for every model (default: torch)",
    )
    p.add_argument("--threads", type=int, default=0, help="engine threads (0: the daemon's choice)")
    p.add_argument("--sentences", type=int, default=16, help="sentences per embeddings request")
    p.add_argument("--repeats", type=int, default=30, help="requests per variant in the cache part")
    p.add_argument("--rounds", type=int, default=3, help="rotations through the three models")
    p.add_argument(
        "--concurrency", type=int, default=3, help="concurrent requests per model in the memory part"
    )
    p.add_argument("--out", type=Path, default=REPO / "bench-results" / "cache.json")
    return p.parse_args(argv)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Sampler(threading.Thread):
    """Samples a process's RSS until stopped; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            self._stop_event.wait(self.every)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


_SENTENCE = "the quick brown fox jumps over the lazy dog while rivers flow to the distant sea"


def sentences(n: int, offset: int = 0) -> list[str]:
    words = _SENTENCE.split()
    return [f"{i + offset}: " + " ".join(words[(i + k) % len(words)] for k in range(15)) for i in range(n)]


def start(workdir: Path, config: str, args: argparse.Namespace) -> Any:
    from support.daemon import start_daemon

    extra = ["--log-level", "warning"]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    return start_daemon(workdir, {}, extra_config=config, args=extra, timeout=600)


def model_toml(name: str, path: Path, task: str, engine: str, **kw: Any) -> str:
    lines = [
        "[[models]]",
        f'name = "{name}"',
        f'ref = "{path}"',
        f'task = "{task}"',
        f'engine = "{engine}"',
        'device = "cpu"',
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in kw.items()]
    return "\n".join(lines) + "\n\n"


# ----------------------------------------------------------------------------- cache


def bench_cache(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from support.models import minilm

    with tempfile.TemporaryDirectory(prefix="hfd-bench-cache-") as tmp:
        daemon = start(Path(tmp), model_toml("embed", minilm(), "embed", args.engine, keep_alive=-1), args)
        try:
            client = httpx.Client(base_url=daemon.http, timeout=120)
            body = {"model": "embed", "input": sentences(args.sentences)}
            first = client.post("/v1/embeddings", json=body)  # loads the model, fills the cache
            first.raise_for_status()
            computed: list[float] = []
            cached: list[float] = []
            same = True
            for _ in range(args.repeats):
                t = time.perf_counter()
                miss = client.post("/v1/embeddings", json={**body, "cache": False})
                computed.append(time.perf_counter() - t)
                t = time.perf_counter()
                hit = client.post("/v1/embeddings", json=body)
                cached.append(time.perf_counter() - t)
                miss.raise_for_status()
                hit.raise_for_status()
                same = same and hit.json()["data"] == first.json()["data"]
            stats = _stats(client)
        finally:
            daemon.stop()
    c, h = statistics.median(computed), statistics.median(cached)
    return {
        "model": "all-MiniLM-L6-v2",
        "engine": args.engine,
        "sentences_per_request": args.sentences,
        "repeats": args.repeats,
        "computed_ms_median": round(c * 1000, 3),
        "cached_ms_median": round(h * 1000, 3),
        "speedup": round(c / h, 1),
        "hit_equals_miss": same,
        "cache_stats": stats.get("cache"),
    }


def _stats(client: Any) -> dict[str, Any]:
    for path in ("/api/stats", "/api/cache"):
        r = client.get(path)
        if r.status_code == 200:
            return dict(r.json())
    return {}


# ----------------------------------------------------------------------------- memory


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from support.models import bench_llama, minilm

    from hfd.daemon.models.memory import estimate_model

    llama, embed = bench_llama(), minilm()
    max_running = 8
    est_llama = estimate_model(llama, "generate", load_dtype="float32", max_running=max_running).total
    est_embed = estimate_model(embed, "embed", load_dtype="float32").total
    # Room for the two largest but not for all three.
    budget = 2 * est_llama + (est_embed // 4)
    config = f"[memory]\nbudget_bytes = {budget}\n\n"
    config += model_toml("llm-a", llama, "generate", args.engine, max_running=max_running, keep_alive=-1)
    config += model_toml("llm-b", llama, "generate", args.engine, max_running=max_running, keep_alive=-1)
    config += model_toml("embed", embed, "embed", args.engine, keep_alive=-1)
    chat = {"messages": [{"role": "user", "content": "Write a short poem about the ocean."}], "max_tokens": 32,
            "ignore_eos": True, "cache": False}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hfd-bench-memory-") as tmp:
        daemon = start(Path(tmp), config, args)
        pid = daemon.proc.pid
        try:
            client = httpx.Client(base_url=daemon.http, timeout=300)
            start_rss = rss_bytes(pid)
            # The overhead: the engine's libraries imported and a model loaded and unloaded once.
            client.post(
                "/v1/embeddings", json={"model": "embed", "input": ["warm up"], "cache": False}
            ).raise_for_status()
            client.post("/api/unload", json={"model": "embed"}).raise_for_status()
            time.sleep(1.0)
            overhead = rss_bytes(pid)
            sampler = Sampler(pid)
            sampler.start()
            peak_reserved = 0
            loads = []
            order = ("llm-a", "embed", "llm-b")

            def call(name: str, r: int) -> None:
                if name == "embed":
                    body = {"model": name, "input": sentences(32, r), "cache": False}
                    client.post("/v1/embeddings", json=body).raise_for_status()
                else:
                    client.post("/v1/chat/completions", json={"model": name, **chat}).raise_for_status()

            with ThreadPoolExecutor(max_workers=args.concurrency + 1) as pool:
                for r in range(args.rounds):
                    for i, name in enumerate(order):
                        # Several requests for this model while the previous one is still busy.
                        targets = [name] * args.concurrency + [order[i - 1]]
                        for f in [pool.submit(call, t, r) for t in targets]:
                            f.result()
                        ps = client.get("/api/ps").json()["models"]
                        loads.append(sorted(m["name"] for m in ps))
                        peak_reserved = max(
                            peak_reserved, sum(int(m.get("memory_reserved_bytes", 0)) for m in ps)
                        )
            peak = sampler.stop()
            for name in ("llm-a", "llm-b", "embed"):
                client.post("/api/unload", json={"model": name})
            time.sleep(1.0)
            idle_rss = rss_bytes(pid)
        finally:
            daemon.stop()
    return {
        "engine": args.engine,
        "budget_bytes": budget,
        "estimates_bytes": {"bench-llama (x2)": est_llama, "all-MiniLM-L6-v2": est_embed},
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "loaded_after_each_request": loads,
        "peak_reserved_bytes": peak_reserved,
        "reserved_within_budget": peak_reserved <= budget,
        "rss_at_start_bytes": start_rss,
        "overhead_bytes": overhead,
        "rss_after_unloading_all_bytes": idle_rss,
        "peak_rss_bytes": peak,
        "peak_rss_within_budget_plus_overhead": peak <= budget + overhead,
        "peak_rss_over_overhead_mib": round((peak - overhead) / MiB, 1),
        "budget_mib": round(budget / MiB, 1),
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {
        "command": "scripts/bench cache " + " ".join(argv),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
    }
    if args.only in (None, "cache"):
        results["cache"] = bench_cache(args)
        c = results["cache"]
        print(f"cache: computed {c['computed_ms_median']} ms, cached {c['cached_ms_median']} ms -> {c['speedup']}x "
              f"(same bytes: {c['hit_equals_miss']})")  # fmt: skip
    if args.only in (None, "memory"):
        results["memory"] = bench_memory(args)
        m = results["memory"]
        print(f"memory: budget {m['budget_mib']} MiB, overhead {m['overhead_bytes'] / MiB:.1f} MiB, "
              f"peak RSS {m['peak_rss_bytes'] / MiB:.1f} MiB (over overhead {m['peak_rss_over_overhead_mib']} MiB), "
              f"within budget+overhead: {m['peak_rss_within_budget_plus_overhead']}")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0
