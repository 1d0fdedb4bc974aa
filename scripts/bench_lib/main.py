"""``scripts/bench``: measure the daemon as apps see it, against the same engine offline.

One run starts ``hfd serve`` (temporary state, a free port, a private socket), then for each
part measures, in this order so they never compete for the CPU:

- ``gen``: the engine offline (one batch of ``gen_batch`` requests stepped to completion), then
  closed-loop clients at each concurrency over HTTP (the official ``openai`` client) and over
  IPC (``hfd.client.AsyncClient``), doors interleaved per level;
- ``embed``: the engine offline in fixed batches, then single-sentence requests the same way;
- ``ttft``: a short request's time to first token unloaded, then while ``ttft_streams`` long
  generations run.

Ratios are taken within the run (the box is shared and noisy). Results go to
``bench-results/bench-<engine>[-<part>][-quick].json`` and a ``.png`` beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_lib import bounds, load, report, served
from bench_lib.workload import Plan, full_plan, quick_plan

REPO = Path(__file__).resolve().parents[2]
PARTS = ("gen", "embed", "ttft")
# The other benchmarks: ``scripts/bench <name> [options]`` runs ``bench_lib.<module>.main``.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "pull": ("pull", "a model pulled by CID from the local IPFS node, against `cat` of the same bytes"),
    "soak": ("soak", "mixed traffic on both doors for --minutes N, and what it did to the daemon"),
    "engines": ("engines", "the engines offline on this machine (the numbers behind the engine policy)"),
    "cache": ("cache", "the response cache, and the memory budget under model rotation"),
    "usage": ("usage", "what the usage log costs a request"),
    "ollama": ("ollama", "Ollama's API against the OpenAI routes for the same chat and embeddings"),
    "whisper": ("whisper", "30 s of audio transcribed by the daemon against the same engine offline"),
    "rerank": ("rerank", "64 concurrent rerank requests of 16 documents against the same engine offline"),
    "vision": ("vision", "a streamed chat with one image: time to first token served against offline"),
    "warm": ("warm", "the first request to a model whose export is cached, on a fresh daemon, by phase"),
    "multiturn": (
        "multiturn",
        "a chat's second turn: time to first token against the first's, prefix caching on and off",
    ),
    "peers": ("peers", "hfd against llama.cpp's server and Infinity, beside the machine's bounds"),
    "ray": (
        "ray_fleet",
        "one model on Ray Serve with 1 and 2 replicas against one box, and the ingress's cost",
    ),
    "structured": (
        "structured",
        "32 json_schema requests against 32 unconstrained, and a new schema's TTFT under load",
    ),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    others = "\n".join(f"  {name:<8} {what}" for name, (_module, what) in SUBCOMMANDS.items())
    p = argparse.ArgumentParser(
        prog="scripts/bench",
        usage=f"scripts/bench [options] | scripts/bench {{{','.join(SUBCOMMANDS)}}} [options]",
        description=__doc__,
        epilog=f"other benchmarks (scripts/bench NAME --help for each):\n{others}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--engine",
        choices=("torch", "openvino", "onnxruntime"),
        help="pin the engine (default: the daemon's choice)",
    )
    p.add_argument("--quick", action="store_true", help="tiny models and small sizes: a smoke run")
    p.add_argument("--only", choices=PARTS, help="run one part")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="engine threads, daemon and offline (0: the daemon's automatic choice)",
    )
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results", help="where the JSON and PNG go")
    p.add_argument("--pull", action="store_true", help="the same as `scripts/bench pull`")
    p.add_argument("--soak", action="store_true", help="the same as `scripts/bench soak`")
    return p.parse_args(argv)


def _run_subcommand(name: str, argv: list[str]) -> int:
    module = importlib.import_module(f"bench_lib.{SUBCOMMANDS[name][0]}")
    return int(module.main(argv) or 0)


def main(argv: list[str]) -> int:
    if argv and argv[0] in SUBCOMMANDS:
        return _run_subcommand(argv[0], argv[1:])
    for flag in ("--pull", "--soak"):  # the older spelling of the two subcommands
        if flag in argv:
            return _run_subcommand(flag[2:], [a for a in argv if a != flag])
    args = parse_args(argv)
    plan = quick_plan() if args.quick else full_plan()
    parts = (args.only,) if args.only else PARTS
    from hfd.daemon.models.threads import auto_threads, available_cores

    threads = args.threads or auto_threads()
    models: dict[str, tuple[Path, str]] = {}
    if "gen" in parts or "ttft" in parts:
        models[served.GEN_MODEL] = (plan.gen_model(), "generate")
    if "embed" in parts:
        models[served.EMBED_MODEL] = (plan.embed_model(), "embed")

    cache_dir = REPO / ".cache" / "bench"  # engine exports survive between runs
    results: dict[str, Any] = {}
    # The offline runs need the engine libraries here too: import them while the daemon starts
    # (start-up is not measured; the offline runs start only once it is ready and idle).
    prewarm = threading.Thread(target=_import_engine_libraries, args=(args.engine or "torch",), daemon=True)
    prewarm.start()
    with tempfile.TemporaryDirectory(prefix="hfd-bench-") as tmp:
        daemon = _start_daemon(Path(tmp), models, args, cache_dir)
        prewarm.join()
        try:
            engines = _loaded_engines(daemon.http)
            engine = (
                args.engine or engines.get(served.GEN_MODEL) or engines.get(served.EMBED_MODEL) or "torch"
            )
            results["meta"] = _meta(args, plan, args.engine or "auto", threads, available_cores(), argv)
            results["meta"]["engines"] = engines
            shown = ", ".join(f"{name} on {eng}" for name, eng in engines.items())
            print(f"hfd bench: plan {plan.name}, {shown}, engine threads {threads}, parts {', '.join(parts)}")
            if "gen" in parts:
                gen_threads = args.threads or auto_threads(engine=engines.get(served.GEN_MODEL, engine))
                # In the same run, at the threads the engine runs on (OpenVINO gets every core).
                machine = bounds.measure(gen_threads, **(bounds.QUICK if args.quick else {}))
                results["generation"] = served.generation(
                    daemon, plan, engines.get(served.GEN_MODEL, engine), gen_threads, cache_dir
                )  # offline at the threads the daemon gives that engine
                row = next(m for m in served.ps(daemon.http) if m["name"] == served.GEN_MODEL)
                gen_model = plan.gen_model()
                results["bounds"] = bounds.for_generation(results["generation"], machine, gen_model, row)
            if "embed" in parts:
                results["embeddings"] = served.embeddings(
                    daemon,
                    plan,
                    engines.get(served.EMBED_MODEL, engine),
                    args.threads or auto_threads(engine=engines.get(served.EMBED_MODEL, engine)),
                    cache_dir,
                )
            if "ttft" in parts:
                results["ttft"] = asyncio.run(served.ttft(daemon, plan))
                served.print_ttft(results["ttft"])
        except BaseException:
            alive = daemon.proc.poll() is None
            print(
                f"hfd serve {'is running' if alive else f'died with {daemon.proc.returncode}'}; its last lines:",
                file=sys.stderr,
            )
            print("\n".join(daemon.output[-30:]), file=sys.stderr)
            raise
        finally:
            code = daemon.stop()
            if code != 0:
                print("hfd serve exited with", code, "\n" + "\n".join(daemon.output[-30:]), file=sys.stderr)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = report.targets(results)
    report.print_targets(results["targets"])
    stem = (
        f"bench-{args.engine or 'auto'}"
        + (f"-{args.only}" if args.only else "")
        + ("-quick" if args.quick else "")
    )
    json_path, png_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.png"
    report.write_json(json_path, results)
    report.plot(png_path, results)
    print(f"\nwrote {_rel(json_path)} and {_rel(png_path)}")
    return 0


# ----------------------------------------------------------------------------- the daemon


def _start_daemon(
    workdir: Path, models: dict[str, tuple[Path, str]], args: argparse.Namespace, cache_dir: Path
) -> Any:
    from tests.support.daemon import start_daemon

    config = ""
    for name, (path, task) in models.items():
        config += (
            f'[[models]]\nname = "{name}"\nref = "{path}"\ntask = "{task}"\npreload = true\nkeep_alive = -1\n'
        )
        if task == "generate" and getattr(args, "weight_format", None):
            config += f'weight_format = "{args.weight_format}"\n'
        if task == "generate" and getattr(args, "dtype", None):
            config += f'options = {{ dtype = "{args.dtype}" }}\n'
        config += "\n"
    extra = ["--log-level", "warning", "--cache-dir", str(cache_dir)]
    if args.engine:
        extra += ["--engine", args.engine]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    started = time.perf_counter()
    daemon = start_daemon(workdir, {}, extra_config=config, args=extra, timeout=600)
    print(f"hfd serve ready in {time.perf_counter() - started:.1f}s: {daemon.http} {daemon.ipc}")
    load.settle(daemon.proc.pid)  # its background imports would share the cores with what is measured
    return daemon


def _import_engine_libraries(engine: str) -> None:
    # Only the engine measured: two engines' thread pools in one process can slow each other.
    names = {
        "torch": ("torch", "transformers"),
        "openvino": ("openvino", "openvino_genai"),
        "onnxruntime": ("onnxruntime",),
    }
    for name in names.get(engine, ()):
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # the offline loads' progress bars and load reports
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _loaded_engines(http: str) -> dict[str, str]:
    return {m["name"]: m["engine"] for m in served.ps(http)}


def _meta(
    args: argparse.Namespace, plan: Plan, engine: str, threads: int, cpus: int, argv: list[str]
) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    cpu = ""
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor()
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "scripts/bench " + " ".join(argv),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "plan": plan.name,
        "engine": engine,
        "threads": threads,
        "cores": cpus,
        "cpu": cpu,
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)
