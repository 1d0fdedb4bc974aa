"""hfd on Ray Serve against the single-box daemon: one model's throughput with 1 and 2 replicas
on a local two-node cluster (one CPU per node), and what the Ray ingress costs a request
against hfd's own HTTP door with the same one replica.

The model is the fake engine with a fixed step latency (``--step-ms``, a stand-in for compute
done elsewhere, e.g. on an accelerator) and a small batch (``--max-running``), so a replica has a
fixed capacity and a second replica is a second one: on a 2-core box real engine compute on two
local nodes would only compete for the same cores. Each setup gets the same closed loop:
``--clients`` concurrent clients for ``--seconds`` (throughput), then ``--sequential`` requests
one at a time (latency; the ingress overhead is the ratio of the medians).

Results go to ``bench-results/ray.json``. Run: ``.venv/bin/python scripts/bench ray``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_lib.cli import subcommand_parser

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]


# --name: (type, default, help)
OPTIONS: dict[str, tuple[type, Any, str]] = {
    "clients": (int, 16, "concurrent clients"),
    "seconds": (float, 15.0, "closed-loop time per setup"),
    "sequential": (int, 30, "requests one at a time, for the latency"),
    "max-tokens": (int, 16, "tokens per reply"),
    "step-ms": (float, 20.0, "the fake engine's step latency"),
    "max-running": (int, 4, "sequences in a replica's batch"),
    "out-dir": (Path, REPO / "bench-results", "where ray.json goes"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("ray", __doc__)
    for name, (kind, default, what) in OPTIONS.items():
        p.add_argument(f"--{name}", type=kind, default=default, help=f"{what} (default {default})")
    return p.parse_args(argv)


def _config(path: Path, model: Path, args: argparse.Namespace) -> Path:
    path.write_text(
        "default_keep_alive = -1\n\n[[models]]\n"
        f"name = 'chat'\nref = {str(model)!r}\nmax_running = {args.max_running}\n"
        f"[models.options]\nstep_ms = {args.step_ms}\n"
    )
    return path


def _measure(base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    body = {"model": "chat", "max_tokens": args.max_tokens, "temperature": 0}
    done: list[float] = []
    errors = 0
    stop = time.monotonic() + args.seconds

    def client(i: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=base_url, timeout=120) as http:
            n = 0
            while time.monotonic() < stop:
                n += 1
                msg = [{"role": "user", "content": f"client {i} request {n}"}]  # no cache hits
                r = http.post("/chat/completions", json={**body, "messages": msg})
                if r.status_code == 200:
                    done.append(time.monotonic())
                else:
                    errors += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies = []
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for n in range(args.sequential):
            msg = [{"role": "user", "content": f"sequential {n} {time.time_ns()}"}]
            t0 = time.perf_counter()
            r = http.post("/chat/completions", json={**body, "messages": msg})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t0)
    return {
        "requests_per_s": round(len(done) / elapsed, 2),
        "requests": len(done),
        "errors": errors,
        "sequential_median_ms": round(statistics.median(latencies) * 1000, 2) if latencies else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from support.daemon import running_daemon
    from support.fake_models import fake_model
    from support.ray_cluster import node_env, serve_on_ray, start_cluster

    from hfd.backends.registry import FAKE_ENGINE_ENV

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hfd-bench-ray-") as tmp:
        root = Path(tmp)
        model = fake_model(root / "models", "llama")
        config = _config(root / "config.toml", model, args)
        fake = {FAKE_ENGINE_ENV: "1"}
        # The same config file (its model options) for the single box: a later --config wins.
        flags = ["--config", str(config), "--log-level", "warning"]
        with running_daemon(root / "single", {}, env=fake, args=flags) as d:
            out["single_box"] = _measure(d.base_url, args)
        cluster = start_cluster(root / "node-a", node_env(root / "node-a", extra=fake))
        try:
            cluster.add_node(root / "node-b", node_env(root / "node-b", extra=fake))
            for replicas in (1, 2):
                flags = ["--ray-replicas", f"{replicas}:{replicas}", "--ray-replica-cpus", "0.5"]
                flags += ["--ray-max-per-node", "1", "--log-level", "warning"]
                served = serve_on_ray(cluster, config, root / "node-a" / "state", flags)
                try:
                    out[f"ray_{replicas}_replica"] = _measure(served.base_url, args)
                finally:
                    served.stop()
        finally:
            cluster.stop()
    single, one, two = out["single_box"], out["ray_1_replica"], out["ray_2_replica"]
    out["ratios"] = {
        "ray_1_vs_single_throughput": round(one["requests_per_s"] / single["requests_per_s"], 3),
        "ray_2_vs_single_throughput": round(two["requests_per_s"] / single["requests_per_s"], 3),
        "ray_2_vs_ray_1_throughput": round(two["requests_per_s"] / one["requests_per_s"], 3),
        "ingress_vs_http_door_latency": round(
            one["sequential_median_ms"] / single["sequential_median_ms"], 3
        ),
    }
    out["settings"] = {k: v for k, v in vars(args).items() if k != "out_dir"}
    return out


def main(argv: list[str]) -> int:
    from bench_lib.report import write_json

    args = parse_args(argv)
    result = run(args)
    write_json(args.out_dir / "ray.json", result)
    lines = [
        f"{name}: {r['requests_per_s']} req/s ({r['errors']} errors), "
        f"sequential median {r['sequential_median_ms']} ms"
        for name, r in ((n, result[n]) for n in ("single_box", "ray_1_replica", "ray_2_replica"))
    ]
    print("\n".join([*lines, "ratios: " + json.dumps(result["ratios"])]))
    return 0
