"""``scripts/bench peers``: hfd against its peers on this machine, the same workloads in one run,
each chat figure beside the machine's bound on it (``bench_lib.bounds``).

- generation: llama.cpp's ``llama-server`` (built from the llama-cpp-python sdist that
  ``scripts/setup --dev`` downloads), the bench Llama converted to GGUF f32 and q8_0; one stream
  and 32 streams of chats of 64 tokens each (streamed, ``ignore_eos``), against hfd over HTTP and
  IPC and against llama-server's OpenAI-compatible endpoint;
- embeddings: Infinity (``infinity-emb``, its ONNX engine, in a venv of its own) with
  all-MiniLM-L6-v2, one sentence per request, 1 and 64 clients, against hfd over HTTP and IPC.

Every server gets the same thread count (``--threads``, default: every core) and runs alone:
hfd first, then each peer in turn. A peer that cannot be built, converted, installed or
started is skipped, and the reason is printed and kept in the JSON. Builds, conversions and the
venv live in ``~/.cache/hfd/peers`` (``HFD_PEERS_CACHE``). ``--build-only`` builds llama-server
(about 45 minutes on two busy cores, at the lowest priority) and installs Infinity, then exits:
start it early. Results: ``bench-results/peers[-quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_lib import bounds, report, served
from bench_lib.cli import subcommand_parser
from bench_lib.drivers import http_chat, http_embed, openai_client
from bench_lib.load import Sample, closed_loop
from bench_lib.peers_proc import Unavailable
from bench_lib.workload import Plan, chat_messages, full_plan, quick_plan, sentence

REPO = Path(__file__).resolve().parents[2]
PEERS = ("llama", "infinity")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = subcommand_parser("peers", __doc__)
    p.add_argument("--only", default=",".join(PEERS), help="comma-separated peers: llama, infinity")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of every server")
    p.add_argument("--engine", choices=("torch", "openvino", "onnxruntime"), help="pin hfd's engine")
    p.add_argument(
        "--weight-format",
        choices=("fp32", "fp16", "int8", "int4"),
        help="hfd's weight format for the chat model (OpenVINO; int8 against llama.cpp's q8_0)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="what hfd's chat model computes in (its `dtype` option; OpenVINO computes in bf16 by "
        "default on CPUs with native bf16): float32 against llama.cpp's f32",
    )
    p.add_argument("--quick", action="store_true", help="tiny models and small sizes: a smoke run")
    p.add_argument(
        "--build-only", action="store_true", help="build llama-server and install Infinity, then exit"
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel jobs of llama.cpp's build")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results")
    return p.parse_args(argv)


def plan_of(quick: bool) -> Plan:
    if quick:
        return dataclasses.replace(quick_plan(), gen_levels=(1, 4), embed_levels=(1, 4))
    return dataclasses.replace(full_plan(), gen_levels=(1, 32), embed_levels=(1, 64))


def _build_only(args: argparse.Namespace, wanted: set[str]) -> int:
    from bench_lib import peers_infinity, peers_llama

    failed = 0
    steps: dict[str, Callable[[], Path]] = {
        "llama": lambda: peers_llama.build(args.jobs),
        "infinity": peers_infinity.install,
    }
    for name, step in steps.items():
        if name in wanted:
            try:
                print(f"{name}: {step()}", flush=True)
            except Unavailable as exc:
                print(f"{name}: not available: {exc}", file=sys.stderr)
                failed = 1
    return failed


async def _levels(
    base_url: str, door: str, levels: tuple[int, ...], total: Callable[[int], int],
    request_of: Callable[[Any], Awaitable[Sample]], unit: str, pid: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """A peer's closed loop at each concurrency, after one warm-up request (as hfd's doors get)."""
    client = openai_client(base_url, 2 * max(levels))
    try:
        await request_of(client)
        out = []
        for c in levels:
            level = await closed_loop(door, c, total(c), lambda: request_of(client), pid)
            out.append(level.summary(unit))
        return out
    finally:
        await client.close()


def _chat_total(plan: Plan) -> Callable[[int], int]:
    return lambda c: max(3, c * plan.gen_rounds)


def llama_peer(plan: Plan, threads: int, skipped: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """llama-server on the bench model as GGUF f32 and q8_0: the chat levels of each."""
    from bench_lib import peers_llama

    out: dict[str, list[dict[str, Any]]] = {}
    for outtype in ("f32", "q8_0"):
        door = f"llama.cpp-{outtype}"
        try:
            model_file = peers_llama.gguf(plan.gen_model(), outtype)
            print(
                f"\n== {door}: {model_file.name}, {threads} threads, {max(plan.gen_levels)} slots", flush=True
            )
            with peers_llama.serve(
                model_file, threads=threads, parallel=max(plan.gen_levels), name=served.GEN_MODEL
            ) as (url, pid):

                async def chat(client: Any) -> Sample:
                    return await http_chat(client, served.GEN_MODEL, chat_messages(), plan.gen_tokens)

                out[door] = asyncio.run(
                    _levels(url, door, plan.gen_levels, _chat_total(plan), chat, "tokens", pid)
                )
            report.print_levels(door, out[door], "tokens")
        except (Unavailable, RuntimeError) as exc:
            skipped[door] = str(exc)
            print(f"  {door} skipped: {exc}", file=sys.stderr)
    return out


def infinity_peer(plan: Plan, threads: int, cache_dir: Path, skipped: dict[str, str]) -> list[dict[str, Any]]:
    from bench_lib import peers_infinity

    try:
        folder = peers_infinity.model_dir(plan.embed_model(), cache_dir, threads)
        print(f"\n== infinity {peers_infinity.VERSION}: {folder.name} (optimum engine)", flush=True)
        with peers_infinity.serve(
            folder, threads=threads, name=served.EMBED_MODEL, batch=plan.embed_batch
        ) as (url, pid):

            async def embed(client: Any) -> Sample:
                return await http_embed(client, served.EMBED_MODEL, [sentence()])

            levels = asyncio.run(
                _levels(url, "infinity", plan.embed_levels, plan.embed_requests, embed, "inputs", pid)
            )
        report.print_levels("infinity (one sentence per request)", levels, "inputs")
        return levels
    except (Unavailable, RuntimeError) as exc:
        skipped["infinity"] = str(exc)
        print(f"  infinity skipped: {exc}", file=sys.stderr)
        return []


def ratios(hfd: list[dict[str, Any]], peer: list[dict[str, Any]], unit: str) -> dict[str, float | None]:
    """hfd's figure over the peer's at each concurrency, per hfd door."""
    out: dict[str, float | None] = {}
    for lv in peer:
        c = lv["concurrency"]
        for door in ("http", "ipc"):
            mine = next(
                (h[f"{unit}_per_s"] for h in hfd if h["door"] == door and h["concurrency"] == c), None
            )
            out[f"hfd_{door}_vs_{lv['door']}_at_{c}"] = report.ratio(mine, lv[f"{unit}_per_s"])
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    wanted = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := wanted - set(PEERS):
        raise SystemExit(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(PEERS)})")
    if args.build_only:
        return _build_only(args, wanted)
    from bench_lib.main import _meta, _start_daemon

    plan = plan_of(args.quick)
    cache_dir = REPO / ".cache" / "bench"
    models: dict[str, tuple[Path, str]] = {}
    if "llama" in wanted:
        models[served.GEN_MODEL] = (plan.gen_model(), "generate")
    if "infinity" in wanted:
        models[served.EMBED_MODEL] = (plan.embed_model(), "embed")
    results: dict[str, Any] = {
        "meta": _meta(args, plan, args.engine or "auto", args.threads, os.cpu_count() or 1, ["peers", *argv])
    }
    skipped: dict[str, str] = {}
    hfd_chat: list[dict[str, Any]] = []
    hfd_embed: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hfd-bench-peers-") as tmp:
        daemon = _start_daemon(Path(tmp), models, args, cache_dir)
        try:
            rows = {m["name"]: m for m in served.ps(daemon.http)}
            results["meta"]["engines"] = {name: m.get("engine") for name, m in rows.items()}
            if served.GEN_MODEL in rows:
                machine = bounds.measure(args.threads, **(bounds.QUICK if args.quick else {}))
                print(f"machine bounds: {bounds.describe(machine)}", flush=True)
                gen = rows[served.GEN_MODEL]
                results["bounds"] = {"machine": machine, "hfd": bounds.model_bounds(
                    plan.gen_model(), gen.get("weight_format"), gen.get("precision"))}  # fmt: skip
                hfd_chat = asyncio.run(served._served_generation(daemon, plan))
                report.print_levels(f"hfd ({gen.get('engine')})", hfd_chat, "tokens")
            if served.EMBED_MODEL in rows:
                hfd_embed = asyncio.run(served._served_embeddings(daemon, plan))
                report.print_levels("hfd (one sentence per request)", hfd_embed, "inputs")
        finally:
            daemon.stop()
    if "llama" in wanted:
        llama = llama_peer(plan, args.threads, skipped)
        machine = results["bounds"]["machine"]
        weights = bounds.weights_of(plan.gen_model())
        bounds.annotate(hfd_chat, machine, weights, results["bounds"]["hfd"]["bytes_per_weight"])
        for door, levels in llama.items():
            bounds.annotate(levels, machine, weights, bounds.bytes_per_weight(door.rsplit("-", 1)[1]))
        results["generation"] = {
            "model": plan.gen_model().name, "tokens_per_request": plan.gen_tokens,
            "hfd": hfd_chat, "peers": llama,
            "ratios": {k: v for door, levels in llama.items() for k, v in ratios(hfd_chat, levels, "tokens").items()},
        }  # fmt: skip
        print_bounds(results["generation"])
    if "infinity" in wanted:
        infinity = infinity_peer(plan, args.threads, cache_dir, skipped)
        results["embeddings"] = {
            "model": plan.embed_model().name, "hfd": hfd_embed, "peers": {"infinity": infinity} if infinity else {},
            "ratios": ratios(hfd_embed, infinity, "inputs"),
        }  # fmt: skip
    results["skipped"] = skipped
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_ratios(results)
    path = args.out_dir / f"{results_stem(args)}.json"
    report.write_json(path, results)
    print(f"\nwrote {path}")
    return 0


def results_stem(args: argparse.Namespace) -> str:
    """``peers``, then what the run was limited to (``-llama``, ``-infinity``), hfd's weight format
    and dtype when set, ``-quick``: runs of different settings keep their own files."""
    only = "-".join(p.strip() for p in args.only.split(",") if p.strip())
    parts = ["peers"]
    if only != "-".join(PEERS):
        parts.append(only)
    parts += [v for v in (args.weight_format, args.dtype) if v]
    if args.quick:
        parts.append("quick")
    return "-".join(parts)


def print_bounds(generation: dict[str, Any]) -> None:
    print(
        "\ngeneration against the machine's bound (one stream: bandwidth / weight bytes; batched: matmul peak)"
    )
    print(f"  {'server':16} {'streams':>7} {'tokens/s':>9} {'bound':>9} {'share':>6}")
    rows = [(f"hfd {lv['door']}", lv) for lv in generation["hfd"]]
    rows += [(door, lv) for door, levels in generation["peers"].items() for lv in levels]
    for name, lv in rows:
        print(f"  {name:16} {lv['concurrency']:>7} {lv['tokens_per_s']:>9.1f} {lv['bound_tokens_per_s']:>9.1f} "
              f"{bounds.percent(lv.get('share_of_bound')):>6}")  # fmt: skip


def print_ratios(results: dict[str, Any]) -> None:
    print("\nhfd / peer, within this run")
    for section in ("generation", "embeddings"):
        for key, value in results.get(section, {}).get("ratios", {}).items():
            print(f"  {section:10} {key:44} {'-' if value is None else f'{value:.2f}'}")
    for name, why in results.get("skipped", {}).items():
        print(f"  skipped {name}: {why.splitlines()[0] if why else ''}")
