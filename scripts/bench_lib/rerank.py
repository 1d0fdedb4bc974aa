"""Benchmark rerank: 64 concurrent requests of 16 documents each, served by a real ``hfd serve``
over HTTP (``/v1/rerank``, plain httpx) with the head pinned to one engine (``--engine``: torch,
onnxruntime or openvino), against that same engine's head scoring the same pairs offline. The
offline baseline is what the daemon would run at best: the head loaded through the engine's own
loader with the load options the daemon gives it (the same threads, dtype and export cache),
every pair tokenised as the service does, and the pairs batched as the encoder scheduler batches
a full queue (sorted by length, at most ``encoder_max_batch`` inputs and ``encoder_batch_tokens``
padded tokens per batch). The ratio is served pairs/s over offline pairs/s, both measured in this
run; the target is at least 0.8.

The model is a small random-weight BERT cross-encoder (4 layers, hidden 256, 8 heads, one
label; small so one run fits a shared 2-core box): compute does not depend on the weights' values. Documents are corpus
strings of 8 to 16 words. Results go to ``bench-results/rerank.json`` (``rerank-<engine>.json``
for an engine other than torch).

Each result also records the batches: offline, those of the full queue; served, the mean size and
padding efficiency of the batches the daemon's encoder scheduler formed (``/api/ps``).

Run: ``.venv/bin/python scripts/bench rerank [--engine E|all] [--requests 64] [--documents 16] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_lib import report
from bench_lib.served import scheduler_stats

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

# The vocabulary of the generated documents and queries.
_TEXT = (
    "the quick brown fox jumps over lazy dog machine learning models turn text into numbers daemon serves "
    "every application socket tokens generated sequences share each decoding step embeddings map "
    "sentences vectors similar close together weather sunny light breeze west cats sleep dogs play garden "
    "rivers flow"
)
WORDS = _TEXT.split()


def _model() -> Path:
    from support.models import _cached, _fields, wordpiece

    def build(out: Path) -> None:
        import torch
        from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast(
            tokenizer_object=wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], "[CLS]", "[SEP]", 1024),
            model_max_length=512, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
            mask_token="[MASK]",
        )  # fmt: skip
        config = BertConfig(**_fields(vocab_size=len(tok), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                            num_attention_heads=8, max_position_embeddings=512, num_labels=1,
                            pad_token_id=tok.pad_token_id))  # fmt: skip
        torch.manual_seed(7)
        BertForSequenceClassification(config).eval().save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)

    return _cached("bench-cross-encoder", 2, build, None)


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))) + "."


def daemon_load_options(path: Path, engine: str, cache_dir: Path, task: str = "rerank") -> Any:
    """The load options the daemon gives a ``task`` model pinned to ``engine`` on the CPU (the
    same thread rule), so an offline baseline runs the engine as the daemon does."""
    from hfd.backends.base import LoadOptions
    from hfd.daemon.models.threads import engine_threads
    from hfd.daemon.settings import ModelSpec, Settings

    settings = Settings(cache_dir=cache_dir)
    spec = ModelSpec(ref=str(path), name=f"bench-{task}", engine=engine)
    threads = engine_threads(settings, spec, engine, "cpu")
    return LoadOptions(path=path, task=task, device="cpu", threads=threads, cache_dir=cache_dir,
                       extra={"allow_pickle": False})  # fmt: skip


def scheduler_batches(lengths: list[int], max_batch: int, batch_tokens: int) -> list[list[int]]:
    """Indices of the inputs in the batches the encoder scheduler makes of a full queue: sorted by
    length, each batch at most ``max_batch`` inputs and ``batch_tokens`` padded tokens."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if (
            current is not None
            and len(current) < max_batch
            and (len(current) + 1) * lengths[i] <= batch_tokens
        ):
            current.append(i)
        else:
            batches.append([i])
    return batches


def offline(
    path: Path, engine: str, cache_dir: Path, requests: list[tuple[str, list[str]]], rounds: int
) -> tuple[float, dict[str, float]]:
    """Pairs per second of the engine's head alone, batched as the scheduler would batch them,
    and those batches' mean size and padding efficiency (real tokens / padded tokens)."""
    from hfd.backends import registry
    from hfd.backends.heads import batch_of
    from hfd.daemon.settings import Settings

    defaults = Settings()
    head = registry.get_backend(engine).load_encoder(daemon_load_options(path, engine, cache_dir))
    queries = [q for q, docs in requests for _ in docs]
    documents = [d for _, docs in requests for d in docs]
    rates = []
    batches: list[list[int]] = []
    lengths: list[int] = []
    for _ in range(rounds):
        started = time.perf_counter()
        encoded = head.tokenizer.encode(queries, documents)
        lengths = [len(e.ids) for e in encoded]
        batches = scheduler_batches(lengths, defaults.encoder_max_batch, defaults.encoder_batch_tokens)
        for batch in batches:
            head.embed(batch_of([encoded[i] for i in batch]))
        rates.append(len(encoded) / (time.perf_counter() - started))
    head.close()
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    shape = {"mean_batch_size": round(len(lengths) / len(batches), 2),
             "padding_efficiency": round(sum(lengths) / padded, 3)}  # fmt: skip
    return statistics.median(rates), shape


def served(
    path: Path, engine: str, cache_dir: Path, requests: list[tuple[str, list[str]]], rounds: int
) -> tuple[float, dict[str, float]]:
    """Pairs per second through the daemon, and the batches its encoder scheduler formed in the
    measured rounds (from ``/api/ps``)."""
    import httpx
    from support.daemon import running_daemon

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_daemon(Path(tmp), {"bench-rerank": path}, args=["--engine", engine, "--cache-dir", str(cache_dir)],
                       timeout=600) as d,
    ):  # fmt: skip
        client = httpx.Client(timeout=600)

        def one(item: tuple[str, list[str]]) -> None:
            r = client.post(d.http + "/v1/rerank", json={"model": "bench-rerank", "query": item[0], "documents": item[1],
                                                        "cache": False, "return_documents": False})  # fmt: skip
            r.raise_for_status()

        def stats() -> dict[str, Any]:
            return scheduler_stats(d.http, "bench-rerank")

        one(requests[0])  # load and warm up
        before = stats()
        rates = []
        with ThreadPoolExecutor(len(requests)) as pool:
            for _ in range(rounds):
                started = time.perf_counter()
                list(pool.map(one, requests))
                rates.append(sum(len(docs) for _, docs in requests) / (time.perf_counter() - started))
        after = stats()
        client.close()
    batches = after["batches"] - before["batches"]
    shape = {"mean_batch_size": round((after["inputs"] - before["inputs"]) / max(1, batches), 2),
             "padding_efficiency": after["padding_efficiency"]}  # fmt: skip
    return statistics.median(rates), shape


ENGINES = ("torch", "onnxruntime", "openvino")


def measure(engine: str, path: Path, requests: list[tuple[str, list[str]]], rounds: int) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cache:  # one export cache: offline builds, served reuses
        off, off_shape = offline(path, engine, Path(cache), requests, rounds)
        print(f"offline ({engine}): {off:.1f} pairs/s {off_shape}", flush=True)
        srv, srv_shape = served(path, engine, Path(cache), requests, rounds)
    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(), "engine": engine, "requests": len(requests),
        "documents": len(requests[0][1]), "offline_pairs_per_s": round(off, 1), "served_pairs_per_s": round(srv, 1),
        "ratio": round(srv / off, 3), "offline_batches": off_shape, "served_batches": srv_shape,
        "load_average": [round(load_start, 1), round(os.getloadavg()[0], 1)],
    }  # fmt: skip
    name = "rerank.json" if engine == "torch" else f"rerank-{engine}.json"
    out = REPO / "bench-results" / name
    report.write_json(out, result)  # atomic, like every results file
    print(f"rerank ({engine}): served {srv:.1f} pairs/s {srv_shape}, offline {off:.1f} pairs/s, "
          f"ratio {srv / off:.2f} ({out})", flush=True)  # fmt: skip
    return result


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench rerank", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--documents", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--engine", choices=(*ENGINES, "all"), default="torch", help="all: the three, one after another"
    )
    args = p.parse_args(argv)
    rng = random.Random(0)
    requests = [
        (_text(rng, 5, 10), [_text(rng, 8, 16) for _ in range(args.documents)]) for _ in range(args.requests)
    ]
    path = _model()
    results = [
        measure(e, path, requests, args.rounds) for e in (ENGINES if args.engine == "all" else (args.engine,))
    ]
    if len(results) > 1:
        print("ratios: " + ", ".join(f"{r['engine']} {r['ratio']:.2f}" for r in results))
    return 0
