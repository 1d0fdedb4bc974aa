"""``scripts/bench peers``: hfd against its peers on this machine, the same workloads in one run,
each chat figure beside the machine's bound on it (``bench_lib.bounds``).

- generation: llama.cpp's ``llama-server`` (built from the llama-cpp-python sdist that
  ``scripts/setup --dev`` downloads), the bench Llama converted to GGUF f32 and q8_0; one stream
  and 32 streams of chats of 64 tokens each (streamed, ``ignore_eos``), against hfd over HTTP and
  IPC and against llama-server's OpenAI-compatible endpoint;
- embeddings: Infinity (``infinity-emb``, its ONNX engine, in a venv of its own) with
  all-MiniLM-L6-v2, one sentence per request, 1 and 64 clients, against hfd over HTTP and IPC.

Every server gets the same thread count (``--threads``, default: every core). hfd and the peers
of one workload are up together and measured in interleaved rounds (``bench_lib.rounds``: each
round visits every server in turn), so the box's drift weighs on all alike; each ratio is
printed with its spread over the rounds. A peer that cannot be built, converted, installed or
started is skipped, and the reason is printed and kept in the JSON. Builds, conversions and the
venv live in ``~/.cache/hfd/peers`` (``HFD_PEERS_CACHE``). ``--build-only`` builds llama-server
(about 45 minutes on two busy cores, at the lowest priority) and installs Infinity, then exits:
start it early. Results: ``bench-results/peers[-quick].json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench_lib import bounds, report, rounds, served
from bench_lib.cli import subcommand_parser
from bench_lib.drivers import http_chat, http_embed, ipc_chat, ipc_client, ipc_embed, openai_client
from bench_lib.load import Sample
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
        "--large",
        action="store_true",
        help="chat only, on the 496M-parameter bench Llama (built on first use, 2 GB), at 1 and 8 "
        "streams: where one stream is bound by the weight bytes it reads",
    )
    p.add_argument(
        "--build-only", action="store_true", help="build llama-server and install Infinity, then exit"
    )
    p.add_argument("--jobs", type=int, default=2, help="parallel jobs of llama.cpp's build")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench-results")
    return p.parse_args(argv)


def plan_of(quick: bool, large: bool = False) -> Plan:
    if quick:
        return dataclasses.replace(quick_plan(), gen_levels=(1, 4), embed_levels=(1, 4))
    if large:
        from tests.support.models import bench_llama_large

        return dataclasses.replace(full_plan(), gen_model=bench_llama_large, gen_levels=(1, 8))
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


# Rounds per level: every server is visited once per round (``bench_lib.rounds``).
ROUNDS = 4


def _chat_per_round(plan: Plan) -> Callable[[int], int]:
    # As many requests a round as scripts/bench's served levels run in all (gen_rounds waves of
    # c): one stream 3 a round (12 in all), 32 streams 64.
    return lambda c: max(3, c * plan.gen_rounds)


def _embed_per_round(plan: Plan) -> Callable[[int], int]:
    return lambda c: max(c, -(-plan.embed_requests(c) // ROUNDS))


def _llama_servers(
    stack: contextlib.ExitStack, plan: Plan, threads: int, skipped: dict[str, str]
) -> dict[str, tuple[str, int]]:
    """llama-server on the bench model as GGUF f32 and q8_0, both left running until ``stack``
    closes: door name -> (OpenAI base URL, pid)."""
    from bench_lib import peers_llama

    out: dict[str, tuple[str, int]] = {}
    for outtype in ("f32", "q8_0"):
        door = f"llama.cpp-{outtype}"
        try:
            model_file = peers_llama.gguf(plan.gen_model(), outtype)
            print(
                f"== {door}: {model_file.name}, {threads} threads, {max(plan.gen_levels)} slots", flush=True
            )
            out[door] = stack.enter_context(
                peers_llama.serve(
                    model_file, threads=threads, parallel=max(plan.gen_levels), name=served.GEN_MODEL
                )
            )
        except (Unavailable, RuntimeError) as exc:
            skipped[door] = str(exc)
            print(f"  {door} skipped: {exc}", file=sys.stderr)
    return out


def _infinity_server(
    stack: contextlib.ExitStack, plan: Plan, threads: int, cache_dir: Path, skipped: dict[str, str]
) -> tuple[str, int] | None:
    from bench_lib import peers_infinity

    try:
        folder = peers_infinity.model_dir(plan.embed_model(), cache_dir, threads)
        print(f"== infinity {peers_infinity.VERSION}: {folder.name} (optimum engine)", flush=True)
        return stack.enter_context(
            peers_infinity.serve(folder, threads=threads, name=served.EMBED_MODEL, batch=plan.embed_batch)
        )
    except (Unavailable, RuntimeError) as exc:
        skipped["infinity"] = str(exc)
        print(f"  infinity skipped: {exc}", file=sys.stderr)
        return None


async def _rounds(
    daemon: Any,
    peers: dict[str, tuple[str, int]],
    levels: tuple[int, ...],
    per_round: Callable[[int], int],
    request_of: Callable[[Any, bool], Awaitable[Sample]],
    unit: str,
    skipped: dict[str, str],
) -> dict[str, list[dict[str, Any]]]:
    """hfd's two doors and each peer (OpenAI HTTP) in interleaved rounds; ``request_of(client,
    ipc)`` makes one request. A door whose first request fails is skipped, with why."""
    connections = 2 * max(levels)
    # Connections idle over a second are not reused: between a server's rounds they idle for
    # as long as the other servers' rounds take, past a server's own keep-alive timeout.
    http, ipc = openai_client(daemon.base_url, connections, keepalive_s=1.0), ipc_client(daemon.ipc)
    clients = {door: openai_client(url, connections, keepalive_s=1.0) for door, (url, _) in peers.items()}
    try:
        doors = [
            rounds.Door("http", lambda: request_of(http, False), daemon.proc.pid),
            rounds.Door("ipc", lambda: request_of(ipc, True), daemon.proc.pid),
        ]
        for door, (_, pid) in peers.items():
            doors.append(rounds.Door(door, lambda c=clients[door]: request_of(c, False), pid))
        measured = await rounds.interleaved(doors, levels, ROUNDS, per_round, unit, failed=skipped)
        for door in ("http", "ipc"):
            if door not in measured:  # hfd's own door failed: nothing to compare with
                raise RuntimeError(f"hfd's {door} door: {skipped[door]}")
        return measured
    finally:
        await http.close()
        await ipc.aclose()
        for client in clients.values():
            await client.close()


def _hfd_levels(measured: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """hfd's doors' levels, level by level (the order ``report.print_levels`` shows)."""
    return sorted(measured["http"] + measured["ipc"], key=lambda lv: (lv["concurrency"], lv["door"]))


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


def ratio_spreads(
    hfd: list[dict[str, Any]], peer: list[dict[str, Any]]
) -> dict[str, dict[str, float] | None]:
    """The same ratios round by round (``rounds.round_ratios``): how far the box's noise moved them."""
    out: dict[str, dict[str, float] | None] = {}
    for lv in peer:
        for h in hfd:
            if h["concurrency"] == lv["concurrency"]:
                out[f"hfd_{h['door']}_vs_{lv['door']}_at_{lv['concurrency']}"] = rounds.round_ratios(h, lv)
    return out


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    wanted = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := wanted - set(PEERS):
        raise SystemExit(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(PEERS)})")
    if args.build_only:
        return _build_only(args, wanted)
    from bench_lib.main import _meta, _start_daemon

    if args.large:
        if "llama" not in wanted:
            raise SystemExit("--large is a chat comparison: it needs the llama peer (--only llama)")
        wanted &= {"llama"}
    plan = plan_of(args.quick, args.large)
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
    with tempfile.TemporaryDirectory(prefix="hfd-bench-peers-") as tmp, contextlib.ExitStack() as stack:
        daemon = _start_daemon(Path(tmp), models, args, cache_dir)
        stack.callback(daemon.stop)
        rows = {m["name"]: m for m in served.ps(daemon.http)}
        results["meta"]["engines"] = {name: m.get("engine") for name, m in rows.items()}
        if served.GEN_MODEL in rows:
            machine = bounds.measure(args.threads, **(bounds.QUICK if args.quick else {}))
            print(f"machine bounds: {bounds.describe(machine)}", flush=True)
            gen = rows[served.GEN_MODEL]
            results["bounds"] = {"machine": machine, "hfd": bounds.model_bounds(
                plan.gen_model(), gen.get("weight_format"), gen.get("precision"))}  # fmt: skip
            with contextlib.ExitStack() as servers:
                llama = _llama_servers(servers, plan, args.threads, skipped)
                print(f"\n== chat: hfd ({gen.get('engine')}) and {', '.join(llama) or 'no peer'}, "
                      f"{ROUNDS} interleaved rounds per level", flush=True)  # fmt: skip

                async def chat(client: Any, ipc: bool) -> Sample:
                    send = ipc_chat if ipc else http_chat
                    return await send(client, served.GEN_MODEL, chat_messages(), plan.gen_tokens)

                measured = asyncio.run(
                    _rounds(daemon, llama, plan.gen_levels, _chat_per_round(plan), chat, "tokens", skipped)
                )
                llama = {door: peer for door, peer in llama.items() if door in measured}
            hfd_chat = _hfd_levels(measured)
            report.print_levels(f"hfd ({gen.get('engine')})", hfd_chat, "tokens")
            for door in llama:
                report.print_levels(door, measured[door], "tokens")
            weights = bounds.weights_of(plan.gen_model())
            hfd_bounds = results["bounds"]["hfd"]
            bounds.annotate(
                hfd_chat, machine, weights, hfd_bounds["bytes_per_weight"], kind=hfd_bounds["compute"]
            )
            for door in llama:
                quant = door.rsplit("-", 1)[1]  # llama.cpp-q8_0: its GGUF's type
                bounds.annotate(measured[door], machine, weights, bounds.bytes_per_weight(quant),
                                kind=bounds.compute_kind(quant))  # fmt: skip
            peers = {door: measured[door] for door in llama}
            results["generation"] = {
                "model": plan.gen_model().name, "tokens_per_request": plan.gen_tokens, "rounds": ROUNDS,
                "hfd": hfd_chat, "peers": peers,
                "ratios": {k: v for levels in peers.values() for k, v in ratios(hfd_chat, levels, "tokens").items()},
                "ratio_rounds": {k: v for levels in peers.values() for k, v in ratio_spreads(hfd_chat, levels).items()},
            }  # fmt: skip
            print_bounds(results["generation"])
        if served.EMBED_MODEL in rows:
            with contextlib.ExitStack() as servers:
                infinity = _infinity_server(servers, plan, args.threads, cache_dir, skipped)
                peer = {"infinity": infinity} if infinity else {}

                async def embed(client: Any, ipc: bool) -> Sample:
                    return await (ipc_embed if ipc else http_embed)(client, served.EMBED_MODEL, [sentence()])

                measured = asyncio.run(
                    _rounds(daemon, peer, plan.embed_levels, _embed_per_round(plan), embed, "inputs", skipped)
                )
            hfd_embed = _hfd_levels(measured)
            report.print_levels("hfd (one sentence per request)", hfd_embed, "inputs")
            if "infinity" in measured:
                report.print_levels("infinity (one sentence per request)", measured["infinity"], "inputs")
            levels = measured.get("infinity", [])
            results["embeddings"] = {
                "model": plan.embed_model().name, "rounds": ROUNDS, "hfd": hfd_embed,
                "peers": {"infinity": levels} if levels else {},
                "ratios": ratios(hfd_embed, levels, "inputs"), "ratio_rounds": ratio_spreads(hfd_embed, levels),
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
    if args.large:
        parts.append("large")
    if args.quick:
        parts.append("quick")
    return "-".join(parts)


def print_bounds(generation: dict[str, Any]) -> None:
    print(
        "\ngeneration against the machine's bound (one stream: bandwidth / weight bytes; batched: the matmul "
        "peak of what each computes in)"
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
        spreads = results.get(section, {}).get("ratio_rounds", {})
        for key, value in results.get(section, {}).get("ratios", {}).items():
            spread = spreads.get(key)
            rounds_text = f"  (rounds {spread['min']:.2f}-{spread['max']:.2f})" if spread else ""
            print(f"  {section:10} {key:44} {'-' if value is None else f'{value:.2f}'}{rounds_text}")
    for name, why in results.get("skipped", {}).items():
        print(f"  skipped {name}: {why.splitlines()[0] if why else ''}")
