"""Compare the engines offline on this machine: the numbers behind ``hfd.backends.policy``.

Three parts (all by default; pick with ``--only``):

- ``embed``: all-MiniLM-L6-v2, sentences of ~15 words, batch 1 and batch 32, torch vs OpenVINO
  vs ONNX Runtime. The engines run in one process and take turns round by round, so a noisy
  neighbour slows them alike; reports the median sentences/s per engine and the ratios.
- ``generate``: the bench Llama (56M parameters, fp32), 32 chat prompts x 64 new tokens (eos
  ignored), all added at once and stepped to completion, plus one request alone: OpenVINO
  ContinuousBatchingPipeline (fp32 and int8 weights) vs the torch engine's continuous batching.
- ``load``: an OpenVINO model loaded cold (an empty export cache: optimum-intel exports it) and
  warm (the export is reused), each in a fresh process; reports the load call alone and the
  whole process (library imports included).

Results go to ``bench-results/engines.json``. Run from the repository root:
``.venv/bin/python scripts/bench engines [--only embed,generate,load] [--rounds 5]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO), str(REPO / "scripts")]

from support.models import bench_llama, minilm  # noqa: E402

from bench_lib.cli import subcommand_parser  # noqa: E402
from bench_lib.offline import run_batch  # noqa: E402
from bench_lib.workload import chat_messages, sentence  # noqa: E402
from hfd.backends.base import LoadOptions, SamplingParams  # noqa: E402
from hfd.backends.registry import get_backend  # noqa: E402


def bench_embed(rounds: int, threads: int, cache_dir: Path) -> dict[str, Any]:
    engines = ["torch", "openvino", "onnxruntime"]
    models = {}
    for engine in engines:
        opts = LoadOptions(
            path=minilm(), task="embed", threads=threads, cache_dir=cache_dir, weight_format="fp32"
        )
        models[engine] = get_backend(engine).load_encoder(opts)
    results: dict[str, Any] = {}
    for batch, total in ((1, 64), (32, 256)):
        rates: dict[str, list[float]] = {e: [] for e in engines}
        texts = [sentence(batch * 1_000_000 + i) for i in range(total)]
        for model in models.values():  # warm-up: first-call allocations and kernel choices
            model.embed(model.tokenize(texts[:batch]))
        for r in range(rounds):
            for engine in engines[r % 3 :] + engines[: r % 3]:
                model = models[engine]
                start = time.perf_counter()
                for i in range(0, total, batch):
                    model.embed(model.tokenize(texts[i : i + batch]))
                rates[engine].append(total / (time.perf_counter() - start))
        medians = {e: statistics.median(v) for e, v in rates.items()}
        results[f"batch{batch}"] = {
            "sentences_per_s": {e: round(v, 1) for e, v in medians.items()},
            "vs_torch": {e: round(v / medians["torch"], 2) for e, v in medians.items()},
        }
        print(f"embed batch {batch}: {results[f'batch{batch}']}", flush=True)
    return results


def bench_generate(requests: int, tokens: int, threads: int, cache_dir: Path) -> dict[str, Any]:
    path = bench_llama()
    variants = [("torch", None), ("openvino", "fp32"), ("openvino", "int8")]
    results: dict[str, Any] = {}
    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True, min_tokens=tokens)
    for engine, weight_format in variants:
        opts = LoadOptions(
            path=path, task="generate", threads=threads, max_running=requests, max_batched_tokens=4096,
            cache_dir=cache_dir, weight_format=weight_format,
            extra={"pipeline_process": False},  # the pipeline itself, in this process
        )  # fmt: skip
        model = get_backend(engine).load_generator(opts)
        chats = [model.apply_chat_template(chat_messages(i)) for i in range(requests)]
        run_batch(model, chats[:2], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))  # warm-up
        produced, seconds = run_batch(model, chats, params)
        single, single_s = run_batch(model, chats[:1], params)
        name = engine if weight_format is None else f"{engine}-{weight_format}"
        results[name] = {
            "batch_tokens_per_s": round(produced / seconds, 1),
            "single_tokens_per_s": round(single / single_s, 1),
            "batch_seconds": round(seconds, 2),
            "prompt_tokens": sum(len(c) for c in chats),
        }
        print(f"generate {name}: {results[name]}", flush=True)
        model.close()
    base = results["torch"]["batch_tokens_per_s"]
    for value in results.values():
        value["batch_vs_torch"] = round(value["batch_tokens_per_s"] / base, 2)
    return results


_LOAD_CHILD = """
import json, sys, time
start = time.perf_counter()
from pathlib import Path
sys.path[:0] = [{tests!r}, {repo!r}]
from hfd.backends.base import LoadOptions
from hfd.backends.openvino_backend import OpenVINOBackend
opts = LoadOptions(path=Path({path!r}), task={task!r}, threads={threads}, cache_dir=Path({cache!r}), weight_format="fp32")
# The libraries a running daemon has imported already (the tokenizer pulls in transformers and,
# with it, torch): timed apart, so "load" is what a model load costs inside the daemon.
from transformers import AutoTokenizer
import openvino_genai
backend = OpenVINOBackend()
loading = time.perf_counter()
model = backend.load_encoder(opts) if {task!r} == "embed" else backend.load_generator(opts)
done = time.perf_counter()
print(json.dumps({{"process": done - start, "load": done - loading}}))
"""


def bench_load(threads: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, path, task in (
        ("minilm-embed", minilm(), "embed"),
        ("bench-llama-generate", bench_llama(), "generate"),
    ):
        with tempfile.TemporaryDirectory(prefix="hfd-bench-load-") as cache:
            times: dict[str, float] = {}
            for phase in ("cold", "warm"):
                code = _LOAD_CHILD.format(
                    tests=str(REPO / "tests"),
                    repo=str(REPO),
                    path=str(path),
                    task=task,
                    threads=threads,
                    cache=cache,
                )
                out = subprocess.run(
                    [sys.executable, "-W", "ignore", "-c", code],
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=True,
                ).stdout
                measured = json.loads(out.strip().splitlines()[-1])
                times[f"{phase}_load_s"] = round(measured["load"], 2)
                times[f"{phase}_process_s"] = round(measured["process"], 2)
            times["load_cold_vs_warm"] = round(times["cold_load_s"] / times["warm_load_s"], 1)
            results[name] = times
            print(f"load {name}: {times}", flush=True)
    return results


def main(argv: list[str]) -> int:
    parser = subcommand_parser("engines", __doc__)
    parser.add_argument("--only", default="embed,generate,load", help="comma-separated parts to run")
    parser.add_argument("--rounds", type=int, default=5, help="embedding rounds per engine (median)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "engines.json")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    report: dict[str, Any] = {"machine": _machine(), "threads": args.threads}
    with tempfile.TemporaryDirectory(prefix="hfd-bench-") as tmp:
        cache = Path(tmp)
        if "embed" in parts:
            report["embed"] = bench_embed(args.rounds, args.threads, cache)
        if "generate" in parts:
            report["generate"] = bench_generate(args.requests, args.tokens, args.threads, cache)
    if "load" in parts:
        report["load"] = bench_load(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def _machine() -> dict[str, Any]:
    from hfd.backends.hardware import detect

    r = detect()
    return {"cpu": r.cpu.model, "features": list(r.cpu.features), "cores": r.cpu.logical_cores}
