"""The same engine without the daemon: the upper bound the served numbers are compared with.

Generation: one batch of requests added at once and stepped to completion. Embeddings: the
engine called with fixed-size batches (tokenisation included, as the daemon does it too).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench_lib.load import process_cpu
from bench_lib.workload import chat_messages, sentence
from hfd.backends.base import LoadOptions, SamplingParams
from hfd.backends.registry import get_backend


def _cpu() -> float:
    """This process's CPU time and its engine processes' (OpenVINO generation runs in one)."""
    return process_cpu(os.getpid()) or time.process_time()


def generation(
    engine: str, path: Path, *, requests: int, tokens: int, threads: int, max_running: int,
    max_batched_tokens: int, cache_dir: Path,
) -> dict[str, Any]:  # fmt: skip
    # OpenVINO: the pipeline itself in this process, as GenAI's own samples drive it (the daemon
    # runs it in a child process of its own).
    opts = LoadOptions(
        path=path, task="generate", threads=threads, max_running=max_running,
        max_batched_tokens=max_batched_tokens, cache_dir=cache_dir,
        extra={"pipeline_process": False},
    )  # fmt: skip
    model = get_backend(engine).load_generator(opts)
    try:
        params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True, min_tokens=tokens)
        run_batch(model, [model.apply_chat_template(chat_messages()) for _ in range(2)], params)  # warm-up
        prompts = [model.apply_chat_template(chat_messages()) for _ in range(requests)]
        cpu = _cpu()
        produced, seconds = run_batch(model, prompts, params)
        cpu = _cpu() - cpu
    finally:
        model.close()
    return {
        "engine": engine,
        "requests": requests,
        "tokens": produced,
        **_rates("tokens", produced, seconds, cpu),
        "prompt_tokens_mean": round(sum(len(p) for p in prompts) / len(prompts), 1),
    }


def transformers_static_batches(
    path: Path, *, runs: list[tuple[int, int]], tokens: int, threads: int
) -> list[dict[str, Any]]:
    """transformers' own ``generate`` on static batches of chat prompts (left-padded, greedy,
    exactly ``tokens`` new tokens each), at ``threads`` torch threads, the model loaded once: for
    each ``(batch, repeats)`` of ``runs``, ``repeats`` batches of ``batch`` prompts one after
    another. What the torch engine is measured against on the same thread count (a batch of 32
    for its continuous batching, batches of one for one stream)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype=torch.float32).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def batch(n: int) -> tuple[Any, Any]:
        rows = [
            list(
                tokenizer.apply_chat_template(
                    chat_messages(), add_generation_prompt=True, tokenize=True, return_dict=False
                )
            )
            for _ in range(n)
        ]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        return ids, mask

    def generate(ids: Any, mask: Any) -> int:
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                do_sample=False, pad_token_id=pad,
            )  # fmt: skip
        return int(out.shape[0] * (out.shape[1] - ids.shape[1]))

    generate(*batch(2))  # warm-up
    results = []
    for requests, repeats in runs:
        ids, mask = batch(requests)
        cpu = _cpu()
        started = time.perf_counter()
        produced = sum(generate(ids, mask) for _ in range(repeats))
        seconds = time.perf_counter() - started
        cpu = _cpu() - cpu
        results.append({"engine": "transformers generate (static batch)", "requests": requests * repeats,
                        "batch": requests, "tokens": produced, "threads": threads,
                        **_rates("tokens", produced, seconds, cpu)})  # fmt: skip
    return results


def run_batch(model: Any, prompts: list[list[int]], params: SamplingParams) -> tuple[int, float]:
    """Add every prompt at once and step to completion: (tokens produced, seconds)."""
    started = time.perf_counter()
    for i, ids in enumerate(prompts):
        model.add(i, ids, params)
    produced = 0
    while model.has_work():
        for out in model.step():
            produced += len(out.token_ids)
    return produced, time.perf_counter() - started


def embeddings(
    engine: str, path: Path, *, inputs: int, batch: int, threads: int, cache_dir: Path
) -> dict[str, Any]:
    opts = LoadOptions(path=path, task="embed", threads=threads, cache_dir=cache_dir)
    model = get_backend(engine).load_encoder(opts)
    try:
        texts = [sentence() for _ in range(inputs)]
        model.embed(model.tokenize(texts[:batch]))  # warm-up
        cpu = _cpu()
        started = time.perf_counter()
        for i in range(0, inputs, batch):
            model.embed(model.tokenize(texts[i : i + batch]))
        seconds = time.perf_counter() - started
        cpu = _cpu() - cpu
    finally:
        model.close()
    return {"engine": engine, "inputs": inputs, "batch": batch, **_rates("inputs", inputs, seconds, cpu)}


def _rates(unit: str, count: int, seconds: float, cpu: float) -> dict[str, float | None]:
    """Wall and CPU time of a run and its rates: ``<unit>_per_s``, ``<unit>_per_cpu_s``."""
    return {
        "seconds": round(seconds, 3),
        f"{unit}_per_s": round(count / seconds, 2),
        "cpu_s": round(cpu, 3),
        # None when the run took under one clock tick of CPU (/proc counts in ticks): a tiny model.
        f"{unit}_per_cpu_s": round(count / cpu, 2) if cpu > 0 else None,
    }
