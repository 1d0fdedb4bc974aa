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
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx

from bench_lib import offline, report
from bench_lib.drivers import http_chat, http_embed, ipc_chat, ipc_client, ipc_embed, openai_client
from bench_lib.load import Level, closed_loop, ms, percentile
from bench_lib.workload import Plan, chat_messages, full_plan, quick_plan, sentence

REPO = Path(__file__).resolve().parents[2]
GEN_MODEL = "bench-llm"
EMBED_MODEL = "bench-embed"
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
        models[GEN_MODEL] = (plan.gen_model(), "generate")
    if "embed" in parts:
        models[EMBED_MODEL] = (plan.embed_model(), "embed")

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
            engine = args.engine or engines.get(GEN_MODEL) or engines.get(EMBED_MODEL) or "torch"
            results["meta"] = _meta(args, plan, args.engine or "auto", threads, available_cores(), argv)
            results["meta"]["engines"] = engines
            shown = ", ".join(f"{name} on {eng}" for name, eng in engines.items())
            print(f"hfd bench: plan {plan.name}, {shown}, engine threads {threads}, parts {', '.join(parts)}")
            if "gen" in parts:
                results["generation"] = _generation(
                    daemon, plan, engines.get(GEN_MODEL, engine), threads, cache_dir
                )
            if "embed" in parts:
                results["embeddings"] = _embeddings(
                    daemon, plan, engines.get(EMBED_MODEL, engine), threads, cache_dir
                )
            if "ttft" in parts:
                results["ttft"] = asyncio.run(_ttft(daemon, plan))
                _print_ttft(results["ttft"])
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
        config += f'[[models]]\nname = "{name}"\nref = "{path}"\ntask = "{task}"\npreload = true\nkeep_alive = -1\n\n'
    extra = ["--log-level", "warning", "--cache-dir", str(cache_dir)]
    if args.engine:
        extra += ["--engine", args.engine]
    if args.threads:
        extra += ["--threads", str(args.threads)]
    started = time.perf_counter()
    daemon = start_daemon(workdir, {}, extra_config=config, args=extra, timeout=600)
    print(f"hfd serve ready in {time.perf_counter() - started:.1f}s: {daemon.http} {daemon.ipc}")
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


def _ps(http: str) -> list[dict[str, Any]]:
    body = httpx.get(http + "/api/ps", timeout=30).json()
    return list(body.get("models", []))


def _loaded_engines(http: str) -> dict[str, str]:
    return {m["name"]: m["engine"] for m in _ps(http)}


def _scheduler_stats(http: str, name: str) -> dict[str, Any]:
    for m in _ps(http):
        if m["name"] == name:
            return dict(m.get("scheduler", {}))
    return {}


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


def _settings_default(name: str) -> Any:
    from hfd.daemon.settings import Settings

    return next(f.default for f in fields(Settings) if f.name == name)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ----------------------------------------------------------------------------- generation


def _generation(daemon: Any, plan: Plan, engine: str, threads: int, cache_dir: Path) -> dict[str, Any]:
    print(f"\n== generation: {plan.gen_batch} requests x {plan.gen_tokens} tokens offline ({engine})")
    off = offline.generation(
        engine, plan.gen_model(), requests=plan.gen_batch, tokens=plan.gen_tokens, threads=threads,
        max_running=_settings_default("max_running"), max_batched_tokens=_settings_default("max_batched_tokens"),
        cache_dir=cache_dir,
    )  # fmt: skip
    print(f"  offline: {off['tokens']} tokens in {off['seconds']}s = {off['tokens_per_s']} tokens/s")
    served = asyncio.run(_served_generation(daemon, plan))
    report.print_levels("served (closed loop)", served, "tokens")

    def tps(door: str, c: int) -> float | None:
        return next(
            (lv["tokens_per_s"] for lv in served if lv["door"] == door and lv["concurrency"] == c), None
        )

    def per_cpu(door: str, c: int) -> float | None:
        return next(
            (
                lv.get("tokens_per_daemon_cpu_s")
                for lv in served
                if lv["door"] == door and lv["concurrency"] == c
            ),
            None,
        )

    ratios, cpu_ratios = {}, {}
    for door in ("http", "ipc"):
        ratios[f"{door}_vs_offline"] = report.ratio(tps(door, plan.gen_batch), off["tokens_per_s"])
        ratios[f"{door}_vs_one_at_a_time"] = report.ratio(tps(door, plan.gen_batch), tps(door, 1))
        cpu_ratios[f"{door}_vs_offline"] = report.ratio(
            per_cpu(door, plan.gen_batch), off["tokens_per_cpu_s"]
        )
    report.print_cpu_ratios("generation", cpu_ratios)
    return {
        "model": plan.gen_model().name,
        "tokens_per_request": plan.gen_tokens,
        "offline": off,
        "served": served,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "daemon_scheduler": _scheduler_stats(daemon.http, GEN_MODEL),
    }


async def _served_generation(daemon: Any, plan: Plan) -> list[dict[str, Any]]:
    http = openai_client(daemon.base_url, 2 * max(plan.gen_levels))
    ipc = ipc_client(daemon.ipc)
    doors = {
        "http": lambda: http_chat(http, GEN_MODEL, chat_messages(), plan.gen_tokens),
        "ipc": lambda: ipc_chat(ipc, GEN_MODEL, chat_messages(), plan.gen_tokens),
    }
    try:
        for request in doors.values():  # warm-up: connections, first-call costs
            await request()
        levels: list[Level] = []
        for c in plan.gen_levels:
            for door, request in doors.items():
                total = max(3, c * plan.gen_rounds)
                levels.append(await closed_loop(door, c, total, request, daemon.proc.pid))
        return [lv.summary("tokens") for lv in levels]
    finally:
        await http.close()
        await ipc.aclose()


# ----------------------------------------------------------------------------- embeddings


def _embeddings(daemon: Any, plan: Plan, engine: str, threads: int, cache_dir: Path) -> dict[str, Any]:
    print(
        f"\n== embeddings: {plan.embed_offline_inputs} sentences in batches of {plan.embed_batch} offline ({engine})"
    )
    off = offline.embeddings(
        engine,
        plan.embed_model(),
        inputs=plan.embed_offline_inputs,
        batch=plan.embed_batch,
        threads=threads,
        cache_dir=cache_dir,
    )
    print(f"  offline: {off['inputs']} sentences in {off['seconds']}s = {off['inputs_per_s']} sentences/s")
    served = asyncio.run(_served_embeddings(daemon, plan))
    report.print_levels("served (closed loop, one sentence per request)", served, "inputs")
    top = max(plan.embed_levels)

    def ips(door: str, key: str = "inputs_per_s") -> float | None:
        return next((lv.get(key) for lv in served if lv["door"] == door and lv["concurrency"] == top), None)

    cpu_ratios = {
        f"{door}_vs_offline": report.ratio(ips(door, "inputs_per_daemon_cpu_s"), off["inputs_per_cpu_s"])
        for door in ("http", "ipc")
    }
    report.print_cpu_ratios("embeddings", cpu_ratios)

    return {
        "model": plan.embed_model().name,
        "offline": off,
        "served": served,
        "ratios": {
            "http_vs_offline": report.ratio(ips("http"), off["inputs_per_s"]),
            "ipc_vs_offline": report.ratio(ips("ipc"), off["inputs_per_s"]),
            "ipc_vs_http": report.ratio(ips("ipc"), ips("http")),
        },
        "cpu_ratios": cpu_ratios,
        "daemon_scheduler": _scheduler_stats(daemon.http, EMBED_MODEL),
    }


async def _served_embeddings(daemon: Any, plan: Plan) -> list[dict[str, Any]]:
    http = openai_client(daemon.base_url, 2 * max(plan.embed_levels))
    ipc = ipc_client(daemon.ipc)
    doors = {
        "http": lambda: http_embed(http, EMBED_MODEL, [sentence()]),
        "ipc": lambda: ipc_embed(ipc, EMBED_MODEL, [sentence()]),
    }
    try:
        for request in doors.values():
            await request()
        levels: list[Level] = []
        for c in plan.embed_levels:
            for door, request in doors.items():
                levels.append(await closed_loop(door, c, plan.embed_requests(c), request, daemon.proc.pid))
        return [lv.summary("inputs") for lv in levels]
    finally:
        await http.close()
        await ipc.aclose()


# ----------------------------------------------------------------------------- short request under load


async def _ttft(daemon: Any, plan: Plan) -> dict[str, Any]:
    print(
        f"\n== short request ({plan.ttft_short_tokens} tokens) alone, then during {plan.ttft_streams} long generations"
    )
    http = openai_client(daemon.base_url, 8)
    ipc = ipc_client(daemon.ipc)
    try:
        await http_chat(http, GEN_MODEL, chat_messages(), plan.ttft_short_tokens)  # warm-up
        unloaded = [
            await http_chat(http, GEN_MODEL, chat_messages(), plan.ttft_short_tokens)
            for _ in range(plan.ttft_samples)
        ]

        started = 0
        all_started = asyncio.Event()
        finished_early = 0

        async def long_generation() -> None:
            nonlocal started, finished_early
            stream = await ipc.chat.completions.create(
                model=GEN_MODEL, messages=chat_messages(), max_tokens=plan.ttft_long_tokens, temperature=0,
                stream=True, ignore_eos=True, min_tokens=plan.ttft_long_tokens,
            )  # fmt: skip
            async with stream:
                first = True
                async for _ in stream:
                    if first:
                        first = False
                        started += 1
                        if started == plan.ttft_streams:
                            all_started.set()
            finished_early += 1  # ran to the end before the measurement was over

        background = [asyncio.create_task(long_generation()) for _ in range(plan.ttft_streams)]
        try:
            ready = asyncio.create_task(all_started.wait())
            done, _ = await asyncio.wait(
                [ready, *background], timeout=300, return_when=asyncio.FIRST_COMPLETED
            )
            ready.cancel()
            for task in done:
                if task is not ready:
                    task.result()  # a background stream that failed: raise its error
                    raise RuntimeError(
                        f"a background generation finished before all {plan.ttft_streams} started"
                    )
            if not all_started.is_set():
                raise TimeoutError(f"the {plan.ttft_streams} background generations did not all start")
            await asyncio.sleep(0.2)  # into steady decoding
            loaded = []
            for i in range(plan.ttft_samples):
                await asyncio.sleep(0.037 * (i % 3))  # land at different points of a step
                loaded.append(await http_chat(http, GEN_MODEL, chat_messages(), plan.ttft_short_tokens))
            valid = finished_early == 0
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
    finally:
        await http.close()
        await ipc.aclose()
    await asyncio.sleep(0.5)  # let the cancellations reach the scheduler

    def summary(samples: list[Any]) -> dict[str, Any]:
        ttft = [s.ttft for s in samples if s.ttft is not None]
        return {"samples": len(samples), "ttft_p50_ms": ms(percentile(ttft, 50)), "ttft_p95_ms": ms(percentile(ttft, 95)),
                "ttft_max_ms": ms(max(ttft) if ttft else None)}  # fmt: skip

    u, lo = summary(unloaded), summary(loaded)
    return {
        "background_streams": plan.ttft_streams,
        "background_tokens": plan.ttft_long_tokens,
        "short_tokens": plan.ttft_short_tokens,
        "background_ran_throughout": valid,
        "unloaded": u,
        "loaded": lo,
        # Only a measurement taken while the long generations all ran says anything about them.
        "ratios": {
            "loaded_vs_unloaded": report.ratio(lo["ttft_p50_ms"], u["ttft_p50_ms"]) if valid else None
        },
    }


def _print_ttft(t: dict[str, Any]) -> None:
    u, lo = t["unloaded"], t["loaded"]
    print(f"  unloaded TTFT p50 {u['ttft_p50_ms']} ms, p95 {u['ttft_p95_ms']} ms")
    print(
        f"  loaded   TTFT p50 {lo['ttft_p50_ms']} ms, p95 {lo['ttft_p95_ms']} ms  (background ran throughout: {t['background_ran_throughout']})"
    )
