#!/usr/bin/env python
"""OpenVINO generation settings swept one factor at a time, offline, on the bench Llama.

Drives hfd's own pipeline (``openvino_engine.LocalPipeline`` over GenAI's
``ContinuousBatchingPipeline``, in this process, as ``scripts/bench`` drives it offline) on hfd's
own exports of the bench model (random weights, 56M parameters; the export cache of
``scripts/bench``, ``.cache/bench``). The baseline of every factor is what hfd sets today: the
compile properties of ``openvino_backend`` (threads, precision hint) and the scheduler fields of
``openvino_generator`` with the KV cache sized by ``openvino_kv``. Each variant changes one thing.

For each factor the baseline and its variants are compiled side by side and measured in turns
(A B C A B C ...: load drift cancels), ``--repeats`` rounds: one greedy stream of ``--tokens``
tokens, then ``--streams`` streams added at once (tokens/s over the whole batch, prefill
included, as the offline bench counts it). Every row also says how many leading tokens of the
one-stream output equal transformers' greedy output (fp32, same prompt): a variant that changes
the numerics shows here. One JSON line per variant, with the load average.

    flock -x /tmp/hfd-box.lock .venv/bin/python scripts/openvino_gen_sweep.py \\
        --weights int8 --factors kv,dq [--repeats 3] [--out FILE]
    ... --curve      step time against batch size (1..64 decoding sequences), and the matmul bound
    ... --profile    OpenVINO's PERF_COUNT per node type, one decode step at 1 and 32 rows

docs/engines.md ("OpenVINO generation tuning") has the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "scripts")]
CACHE = REPO / ".cache" / "bench"
LARGE = False  # --large: the 496M-parameter bench Llama instead (tests.support.models.bench_llama_large)


def subject() -> Path:
    """The model swept: the bench Llama, or with ``--large`` its 496M-parameter sibling, where one
    stream's decode is bound by the weight bytes read rather than by each layer's fixed costs."""
    from support.models import bench_llama, bench_llama_large

    return bench_llama_large() if LARGE else bench_llama()


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    properties: dict[str, Any] = dataclasses.field(default_factory=dict)  # compile properties, merged
    scheduler: dict[str, Any] = dataclasses.field(default_factory=dict)  # SchedulerConfig fields, merged
    nncf: dict[str, Any] | None = None  # int8 compression options other than hfd's (own export)
    kv_scale: float = 1.0  # the KV cache's block count times this


def _nncf(mode: str, group: int = -1) -> dict[str, Any]:
    return {"mode": mode, "group_size": group}


# factor -> (weight formats it applies to, variants besides the baseline)
FACTORS: dict[str, tuple[tuple[str, ...], list[Variant]]] = {
    "precision": (("fp32", "int8"), [Variant("precision f32", {"INFERENCE_PRECISION_HINT": "f32"}),
                                     Variant("precision bf16", {"INFERENCE_PRECISION_HINT": "bf16"})]),
    "kv": (("fp32", "int8"), [Variant(f"kv {p}", {"KV_CACHE_PRECISION": p}) for p in ("f32", "f16", "bf16", "u8")]),
    "dq": (("int8", "int4"), [Variant(f"dq group {g}", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(g)})
                       for g in (0, 32, 64, 128, 256)]),
    # NNCF 3.4 has no group-wise int8 ("INT8 modes require per-channel quantization"): only the
    # symmetric per-channel variant of hfd's asymmetric per-channel int8.
    "nncf": (("int8",), [Variant("int8 sym per-channel", nncf=_nncf("INT8_SYM"))]),
    "batched": (("fp32", "int8"), [Variant(f"max_num_batched_tokens {n}", scheduler={"max_num_batched_tokens": n})
                                   for n in (256, 1024, 16384)]),
    "hint": (("fp32", "int8"), [Variant("hint THROUGHPUT", {"PERFORMANCE_HINT": "THROUGHPUT"}),
                                Variant("NUM_STREAMS 2", {"NUM_STREAMS": "2"})]),
    "pinning": (("fp32", "int8"), [Variant("pinning off", {"ENABLE_CPU_PINNING": False})]),
    "blocks": (("fp32", "int8"), [Variant("kv blocks x0.25", kv_scale=0.25), Variant("kv blocks x4", kv_scale=4.0)]),
    "split": (("fp32", "int8"), [Variant("dynamic_split_fuse on", scheduler={"dynamic_split_fuse": True})]),
}  # fmt: skip
BASELINE = Variant("hfd default")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def export_dir(weight_format: str, nncf: dict[str, Any] | None) -> Path:
    """hfd's export of the bench model in ``weight_format``; with ``nncf``, the fp32 export
    compressed with those options instead (kept beside hfd's exports)."""
    from hfd.backends.base import LoadOptions
    from hfd.backends.openvino_export import prepare_ir

    opts = LoadOptions(path=subject(), task="generate", cache_dir=CACHE)
    if nncf is None:
        return prepare_ir(opts, "generate", weight_format)[0]
    import nncf as nncf_lib

    from hfd.backends.openvino_export import compress_ir

    tag = f"{subject().name}-{nncf['mode'].lower()}-g{nncf['group_size']}"
    out = CACHE / "sweep" / tag
    if not (out / "openvino_model.xml").is_file():
        fp32 = prepare_ir(opts, "generate", "fp32")[0]
        tmp = out.with_name(f".{tag}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(fp32, tmp)
        options = {
            "mode": getattr(nncf_lib.CompressWeightsMode, nncf["mode"]),
            "group_size": nncf["group_size"],
        }
        compress_ir(tmp, options, tag)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out


def hfd_config(
    threads: int, max_running: int, weight_format: str = "fp32"
) -> tuple[dict[str, Any], dict[str, Any], int]:
    """What hfd would build the model's pipeline with: (properties, scheduler, context)."""
    from hfd.backends import _hf
    from hfd.backends.base import LoadOptions
    from hfd.backends.openvino_backend import _activation_group, _compile_properties
    from hfd.backends.openvino_generator import scheduler_fields
    from hfd.backends.openvino_kv import size_kv_cache

    model = subject()
    opts = LoadOptions(path=model, task="generate", threads=threads, max_running=max_running, cache_dir=CACHE)
    config = _hf.require_model_dir(model)
    context = int(config.get("max_position_embeddings") or 2048)
    scheduler = scheduler_fields(opts, context)
    size_kv_cache(scheduler, opts, config, "CPU", context)
    properties = _activation_group(opts, _compile_properties(opts, "CPU"), weight_format, "CPU")
    return properties, scheduler, context


def build(weight_format: str, variant: Variant, threads: int, max_running: int) -> Any:
    from hfd.backends.openvino_engine import LocalPipeline, pipeline_init

    properties, scheduler, _ = hfd_config(threads, max_running, weight_format)
    scheduler.update(variant.scheduler)
    if variant.kv_scale != 1.0:
        scheduler["num_kv_blocks"] = max(max_running * 4, int(scheduler["num_kv_blocks"] * variant.kv_scale))
    directory = export_dir(weight_format, variant.nncf)
    return LocalPipeline(
        pipeline_init(directory, "CPU", {**properties, **variant.properties}, scheduler, None)
    )


def prompt_ids(index: int) -> list[int]:
    from bench_lib.workload import chat_messages
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(subject())
    got = tok.apply_chat_template(
        chat_messages(index), add_generation_prompt=True, tokenize=True, return_dict=True
    )
    return [int(t) for t in got["input_ids"]]


def greedy_config(tokens: int) -> dict[str, Any]:
    return {"max_new_tokens": tokens, "min_new_tokens": tokens, "ignore_eos": True, "do_sample": False}


def run(pipeline: Any, prompts: list[list[int]], tokens: int, on_step: Callable[[float], None] | None = None
        ) -> tuple[float, dict[int, list[int]]]:  # fmt: skip
    """Every prompt added at once, stepped to the end: (seconds, tokens per sequence)."""
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    started = time.perf_counter()
    for i, ids in enumerate(prompts):
        pipeline.add(i, ids, greedy_config(tokens))
    live = set(out)
    while live:
        t = time.perf_counter()
        for seq_id, got, finished, _lps, _prompt in pipeline.step():
            out[seq_id].extend(got)
            if finished is not None:
                live.discard(seq_id)
        if on_step is not None:
            on_step(time.perf_counter() - t)
    return time.perf_counter() - started, out


def transformers_greedy(prompt: list[int], tokens: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(subject(), dtype=torch.float32)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        got = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                             min_new_tokens=tokens, do_sample=False)  # fmt: skip
    return [int(t) for t in got[0, len(prompt) :]]


def equal_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def sweep(args: argparse.Namespace) -> None:
    one = prompt_ids(0)
    many = [prompt_ids(i) for i in range(args.streams)]
    reference = transformers_greedy(one, args.tokens)
    # With --agreement, every one of the batch's outputs against transformers too (slower).
    references = [transformers_greedy(p, args.tokens) for p in many] if args.agreement else []
    for weight_format in args.weights:
        for factor in args.factors:
            formats, variants = FACTORS[factor]
            if weight_format not in formats:
                continue
            pipes = {}
            for v in [BASELINE, *variants]:
                try:
                    pipes[v.name] = (v, build(weight_format, v, args.threads, args.max_running))
                except Exception as exc:  # a combination the plugin refuses is a finding too
                    emit(args, {"weights": weight_format, "factor": factor, "variant": v.name,
                                "error": str(exc).splitlines()[-1][:300] or str(exc)[:300]})  # fmt: skip
            keys = ("one", "many", "one_cpu", "many_cpu")
            rows: dict[str, dict[str, list[float]]] = {name: {k: [] for k in keys} for name in pipes}
            prefix: dict[str, int] = {}
            batch_prefix: dict[str, int] = {}
            load = [load_average()]
            for _ in range(args.repeats):
                for name, (_v, pipe) in pipes.items():
                    cpu = time.process_time()  # every thread of this process: OpenVINO's too
                    seconds, out = run(pipe, [one], args.tokens)
                    rows[name]["one_cpu"].append(args.tokens / (time.process_time() - cpu))
                    rows[name]["one"].append(args.tokens / seconds)
                    prefix[name] = equal_prefix(out[0], reference)
                    cpu = time.process_time()
                    seconds, outs = run(pipe, many, args.tokens)
                    produced = sum(len(t) for t in outs.values())
                    if references:
                        batch_prefix[name] = sum(equal_prefix(outs[i], r) for i, r in enumerate(references))
                    rows[name]["many_cpu"].append(produced / (time.process_time() - cpu))
                    rows[name]["many"].append(produced / seconds)
            load.append(load_average())
            for name, (_v, pipe) in pipes.items():
                row = {
                    "weights": weight_format, "factor": factor, "variant": name,
                    "one_stream_tok_s": round(statistics.median(rows[name]["one"]), 1),
                    f"streams_{args.streams}_tok_s": round(statistics.median(rows[name]["many"]), 1),
                    # Per CPU-second: steadier than wall time on a box shared with other work.
                    "one_stream_tok_cpu_s": round(statistics.median(rows[name]["one_cpu"]), 1),
                    f"streams_{args.streams}_tok_cpu_s": round(statistics.median(rows[name]["many_cpu"]), 1),
                    "one_each": [round(x, 1) for x in rows[name]["one"]],
                    "many_each": [round(x, 1) for x in rows[name]["many"]],
                    "equal_to_transformers": f"{prefix[name]}/{args.tokens}",
                    **({"batch_equal_to_transformers": f"{batch_prefix[name]}/{args.tokens * len(references)}"}
                       if references else {}),
                    # What GenAI allocated for the KV cache: the element size shows in it.
                    "kv_cache_mib": round(pipe.kv_cache_bytes / 2**20, 1),
                    "precision": pipe.precision, "load_average": load,
                    "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }  # fmt: skip
                emit(args, row)
                pipe.close()
            del pipes


def curve(args: argparse.Namespace) -> None:
    """Median decode-step time for 1..64 sequences, beside the matmul bound for that batch."""
    from bench_lib import bounds

    machine = bounds.measure(args.threads, repeats=3)
    weights = bounds.weights_of(subject())
    for weight_format in args.weights:
        pipe = build(weight_format, BASELINE, args.threads, 64)
        peak = bounds.compute_peak(machine, bounds.compute_kind(weight_format, pipe.precision))
        for batch in (1, 2, 4, 8, 16, 32, 64):
            steps: list[float] = []
            run(pipe, [prompt_ids(i) for i in range(batch)], args.tokens, steps.append)
            decode = sorted(steps[2:])  # the first steps prefill
            step_s = statistics.median(decode)
            flops = 2.0 * weights.read_per_token * batch / step_s
            emit(args, {"curve": weight_format, "batch": batch, "step_ms": round(1000 * step_s, 2),
                        "tok_s": round(batch / step_s, 1), "matmul_gflop_s": round(flops / 1e9, 1),
                        "share_of_matmul_peak": round(flops / peak, 3),
                        "peak_gflop_s": round(peak / 1e9, 1),
                        "read_gb_s": round(machine["read_bytes_per_s"] / 1e9, 1),
                        "precision": pipe.precision, "load_average": load_average()})  # fmt: skip
        pipe.close()


def profile(args: argparse.Namespace) -> None:
    """PERF_COUNT of one decode step of the stateful export (SDPA, not GenAI's paged attention:
    the matmuls are the same graph nodes), per node type, at 1 and ``--streams`` rows."""
    import numpy as np
    import openvino as ov

    core = ov.Core()
    for weight_format in args.weights:
        properties, _, _ = hfd_config(args.threads, args.max_running, weight_format)
        xml = export_dir(weight_format, None) / "openvino_model.xml"
        compiled = core.compile_model(core.read_model(xml), "CPU", {**properties, "PERF_COUNT": True})
        for batch in (1, args.streams):
            request = compiled.create_infer_request()
            request.reset_state()
            context = 32
            ids = np.full((batch, context), 100, dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones((batch, context), np.int64),
                    "position_ids": np.tile(np.arange(context, dtype=np.int64), (batch, 1)),
                    "beam_idx": np.arange(batch, dtype=np.int32)}  # fmt: skip
            request.infer(feed)
            times: dict[str, float] = {}
            for step in range(8):  # decode steps; the last one's counters are read
                pos = context + step
                feed = {"input_ids": np.full((batch, 1), 7, np.int64),
                        "attention_mask": np.ones((batch, pos + 1), np.int64),
                        "position_ids": np.full((batch, 1), pos, np.int64),
                        "beam_idx": np.arange(batch, dtype=np.int32)}  # fmt: skip
                request.infer(feed)
            for info in request.profiling_info:
                if info.status == info.Status.EXECUTED:
                    times[info.node_type] = times.get(info.node_type, 0.0) + info.real_time.total_seconds()
            total = sum(times.values())
            top = sorted(times.items(), key=lambda kv: -kv[1])[:8]
            emit(args, {"profile": weight_format, "rows": batch, "step_ms": round(1000 * total, 3),
                        "share": {k: round(v / total, 3) for k, v in top},
                        "load_average": load_average()})  # fmt: skip


def emit(args: argparse.Namespace, row: dict[str, Any]) -> None:
    line = json.dumps(row)
    print(line, flush=True)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(line + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=lambda s: s.split(","), default=["fp32", "int8"])
    ap.add_argument("--factors", type=lambda s: s.split(","), default=list(FACTORS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-running", type=int, default=32)
    ap.add_argument(
        "--agreement",
        action="store_true",
        help="also compare every output of the batch with transformers' greedy tokens",
    )
    ap.add_argument("--curve", action="store_true", help="step time against batch size instead")
    ap.add_argument("--profile", action="store_true", help="PERF_COUNT per node type instead")
    ap.add_argument("--out", type=Path, default=None, help="append the JSON lines here too")
    ap.add_argument(
        "--large", action="store_true", help="sweep the 496M-parameter bench Llama (built on first use, 2 GB)"
    )
    args = ap.parse_args()
    global LARGE
    LARGE = args.large
    unknown = set(args.factors) - set(FACTORS)
    if unknown:
        ap.error(f"unknown factors {sorted(unknown)}; choose from {', '.join(FACTORS)}")
    import openvino as ov

    defaults = {k: str(ov.Core().get_property("CPU", k)) for k in
                ("KV_CACHE_PRECISION", "DYNAMIC_QUANTIZATION_GROUP_SIZE", "INFERENCE_PRECISION_HINT",
                 "PERFORMANCE_HINT", "ENABLE_CPU_PINNING")}  # fmt: skip
    emit(args, {"openvino": ov.__version__, "cpu_defaults": defaults, "threads": args.threads,
                "model": subject().name, "load_average": load_average()})  # fmt: skip
    (profile if args.profile else curve if args.curve else sweep)(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
