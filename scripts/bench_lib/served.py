"""The parts of ``scripts/bench`` (``bench_lib.main``): generation, embeddings and a short
request's time to first token under load, each measured served against the same engine offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx

from bench_lib import offline, report
from bench_lib.drivers import http_chat, http_embed, ipc_chat, ipc_client, ipc_embed, openai_client
from bench_lib.load import Level, Sample, closed_loop, ms, percentile
from bench_lib.workload import Plan, chat_messages, sentence

GEN_MODEL = "bench-llm"
EMBED_MODEL = "bench-embed"
Request = Callable[[], Awaitable[Sample]]  # one request through one door


def _settings_default(name: str) -> Any:
    from hfd.daemon.settings import Settings

    return next(f.default for f in fields(Settings) if f.name == name)


def ps(http: str) -> list[dict[str, Any]]:
    body = httpx.get(http + "/api/ps", timeout=30).json()
    return list(body.get("models", []))


def scheduler_stats(http: str, name: str) -> dict[str, Any]:
    for m in ps(http):
        if m["name"] == name:
            return dict(m.get("scheduler", {}))
    return {}


# ----------------------------------------------------------------------------- generation


def generation(daemon: Any, plan: Plan, engine: str, threads: int, cache_dir: Path) -> dict[str, Any]:
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
    static = one = None
    if engine == "torch":  # the torch engine against transformers' own generate
        # One stream: as many one-prompt generate calls in a row as the served level's requests.
        one_requests = next(lv["requests"] for lv in served if lv["concurrency"] == 1)
        static, one = offline.transformers_static_batches(
            plan.gen_model(), runs=[(plan.gen_batch, 1), (1, one_requests)], tokens=plan.gen_tokens, threads=threads
        )  # fmt: skip
        static["ratios"] = {
            "engine_offline_vs_static": report.ratio(off["tokens_per_s"], static["tokens_per_s"]),
            **{f"{door}_vs_static": report.ratio(tps(door, plan.gen_batch), static["tokens_per_s"]) for door in ("http", "ipc")},
        }  # fmt: skip
        one["ratios"] = {
            f"{door}_one_vs_generate": report.ratio(tps(door, 1), one["tokens_per_s"])
            for door in ("http", "ipc")
        }
        for what, result in (
            (f"static batch of {plan.gen_batch}", static),
            (f"one prompt at a time ({one_requests})", one),
        ):
            print(f"  transformers generate, {what}, {threads} threads: {result['tokens_per_s']} tokens/s; "
                  + ", ".join(f"{k} {v}" for k, v in result["ratios"].items()))  # fmt: skip
    return {
        "model": plan.gen_model().name,
        "tokens_per_request": plan.gen_tokens,
        "offline": off,
        **({"offline_transformers_static": static} if static else {}),
        **({"offline_transformers_one": one} if one else {}),
        "served": served,
        "ratios": ratios,
        "cpu_ratios": cpu_ratios,
        "daemon_scheduler": scheduler_stats(daemon.http, GEN_MODEL),
    }


async def _served_generation(daemon: Any, plan: Plan) -> list[dict[str, Any]]:
    def doors(http: Any, ipc: Any) -> dict[str, Request]:
        return {
            "http": lambda: http_chat(http, GEN_MODEL, chat_messages(), plan.gen_tokens),
            "ipc": lambda: ipc_chat(ipc, GEN_MODEL, chat_messages(), plan.gen_tokens),
        }

    return await _served(daemon, plan.gen_levels, doors, lambda c: max(3, c * plan.gen_rounds), "tokens")


async def _served(
    daemon: Any,
    levels: tuple[int, ...],
    doors_of: Callable[[Any, Any], dict[str, Request]],
    total: Callable[[int], int],
    unit: str,
) -> list[dict[str, Any]]:
    """Each door's closed loop at each concurrency of ``levels`` (``total(c)`` requests), after
    one warm-up request per door (connections, first-call costs)."""
    http = openai_client(daemon.base_url, 2 * max(levels))
    ipc = ipc_client(daemon.ipc)
    doors = doors_of(http, ipc)
    try:
        for request in doors.values():
            await request()
        out: list[Level] = []
        for c in levels:
            for door, request in doors.items():
                out.append(await closed_loop(door, c, total(c), request, daemon.proc.pid))
        return [lv.summary(unit) for lv in out]
    finally:
        await http.close()
        await ipc.aclose()


# ----------------------------------------------------------------------------- embeddings


def embeddings(daemon: Any, plan: Plan, engine: str, threads: int, cache_dir: Path) -> dict[str, Any]:
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
        "daemon_scheduler": scheduler_stats(daemon.http, EMBED_MODEL),
    }


async def _served_embeddings(daemon: Any, plan: Plan) -> list[dict[str, Any]]:
    def doors(http: Any, ipc: Any) -> dict[str, Request]:
        return {
            "http": lambda: http_embed(http, EMBED_MODEL, [sentence()]),
            "ipc": lambda: ipc_embed(ipc, EMBED_MODEL, [sentence()]),
        }

    return await _served(daemon, plan.embed_levels, doors, plan.embed_requests, "inputs")


# ----------------------------------------------------------------------------- short request under load


async def ttft(daemon: Any, plan: Plan) -> dict[str, Any]:
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


def print_ttft(t: dict[str, Any]) -> None:
    u, lo = t["unloaded"], t["loaded"]
    print(f"  unloaded TTFT p50 {u['ttft_p50_ms']} ms, p95 {u['ttft_p95_ms']} ms")
    print(
        f"  loaded   TTFT p50 {lo['ttft_p50_ms']} ms, p95 {lo['ttft_p95_ms']} ms  (background ran throughout: {t['background_ran_throughout']})"
    )
