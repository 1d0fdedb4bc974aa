#!/usr/bin/env python
"""Prompt-lookup decoding on the OpenVINO engine against plain decoding, offline.

Loads the benchmark Llama (random weights) twice on the OpenVINO engine, in-process, without
and with ``speculative = "prompt-lookup"``, and times one greedy generation of ``--tokens``
tokens per prompt, ``--repeats`` times interleaved (median): a non-repetitive prompt (distinct
random token ids), a story of 12 random words repeated, a given text to edit (a code block; a random model rarely copies it), and a copying
prompt whose continuation repeats text already in the prompt (prompt P, the model's greedy
continuation G of P, then P again: what a model that edits or quotes its input produces).
A random model's greedy output soon loops, which the lookup also matches (it searches the
generated tokens too); the sampled run (temperature 1) is the case where nothing recurs.
Prints one JSON line per prompt: seconds and tokens per step for each, the speed-up, and
whether both outputs are equal. With ``--draft`` the second load uses a draft model instead
(``draft_model``: the bench Llama's first two layers, ``support.draft_models``) on the same prompts.

    .venv/bin/python scripts/openvino_prompt_lookup.py --tokens 128 --repeats 3 [--draft]

docs/engines.md ("Prompt-lookup decoding") and docs/benchmarks.md have the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CODE = """def merge(a, b):
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] <= b[j]:
            out.append(a[i])
            i += 1
        else:
            out.append(b[j])
            j += 1
    out.extend(a[i:])
    out.extend(b[j:])
    return out
"""


def _run(gen: Any, prompt: list[int], tokens: int, temperature: float = 0.0) -> tuple[float, list[int], int]:
    from support.engine_steps import drive

    from hfd.backends.base import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=temperature, seed=1, ignore_eos=True)
    start = time.perf_counter()
    outs = drive(gen, {0: (prompt, params)})[0]
    return time.perf_counter() - start, [t for o in outs for t in o.token_ids], len(outs)


def main() -> int:
    from support.models import bench_llama

    from hfd.backends.base import LoadOptions
    from hfd.backends.openvino_backend import OpenVINOBackend

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--draft", action="store_true", help="a draft model instead of prompt lookup")
    ap.add_argument("--draft-tokens", type=int, default=5)
    args = ap.parse_args()
    cache = Path(__file__).resolve().parent.parent / ".cache" / "bench"

    def load(**extra: Any) -> Any:
        opts = LoadOptions(
            path=bench_llama(), task="generate", cache_dir=cache, weight_format="fp32", dtype="float32",
            threads=args.threads, extra={"pipeline_process": False, **extra},
        )  # fmt: skip
        return OpenVINOBackend().load_generator(opts)

    if args.draft:
        from support.draft_models import bench_llama_draft

        draft = {"draft_model": "bench-llama-draft", "draft_model_path": str(bench_llama_draft())}
        plain, lookup = load(), load(**draft, draft_tokens=args.draft_tokens)
    else:
        plain, lookup = load(), load(speculative="prompt-lookup")
    rng = random.Random(7)
    words = [
        "river",
        "stone",
        "lamp",
        "copper",
        "window",
        "orange",
        "violin",
        "desert",
        "harbor",
        "pencil",
        "ocean",
        "ladder",
    ]
    prose = " ".join(rng.choice(words) for _ in range(120))
    base = plain.encode_prompt("Summarise the following story. " + prose[:300])
    _, cont, _ = _run(plain, base, args.tokens)
    prompts = {
        "repeated-words": plain.encode_prompt(prose),  # 12 words, each many times
        "non-repetitive": rng.sample(range(1000, 30000), 120),  # distinct ids: no n-gram recurs
        "code-edit": plain.encode_prompt("Rename out to merged in this function:\n" + CODE),
        "copying": base + cont + base,
    }
    cases = [(name, prompt, 0.0) for name, prompt in prompts.items()]
    cases.append(("non-repetitive-sampled", prompts["non-repetitive"], 1.0))
    for name, prompt, temperature in cases:
        runs: dict[str, list[tuple[float, list[int], int]]] = {"plain": [], "lookup": []}
        for _ in range(args.repeats):
            for key, gen in (("plain", plain), ("lookup", lookup)):
                runs[key].append(_run(gen, prompt, args.tokens, temperature))
        row: dict[str, Any] = {"prompt": name, "prompt_tokens": len(prompt), "new_tokens": args.tokens}
        for key, got in runs.items():
            row[f"{key}_s"] = round(statistics.median(r[0] for r in got), 3)
            row[f"{key}_tokens_per_step"] = round(args.tokens / got[0][2], 2)
        row["speedup"] = round(row["plain_s"] / row["lookup_s"], 2)
        row["equal"] = (
            None if temperature else all(r[1] == runs["plain"][0][1] for rs in runs.values() for r in rs)
        )
        print(json.dumps(row), flush=True)
    plain.close()
    lookup.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
