"""Benchmark rerank: 64 concurrent requests of 16 documents each, served by a real ``hfd serve``
over HTTP (``/v1/rerank``, plain httpx), against the same engine (the torch cross-encoder head,
``hfd.backends.torch_encoder.load_head``) scoring the same pairs offline in batches of the
scheduler's size. The ratio is served pairs/s over offline pairs/s, both measured in this run.

The model is a small random-weight BERT cross-encoder (4 layers, hidden 256, 8 heads, one
label; small so one run fits a shared 2-core box): compute does not depend on the weights' values. Documents are corpus
strings of 8 to 16 words. Results go to ``bench-results/rerank.json``.

Run: ``.venv/bin/python scripts/bench rerank [--requests 64] [--documents 16] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
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


def offline(path: Path, requests: list[tuple[str, list[str]]], batch: int, rounds: int) -> float:
    """Pairs per second of the engine alone, the request's pairs in fixed batches."""
    from hfd.backends.base import LoadOptions
    from hfd.backends.heads import batch_of
    from hfd.backends.torch_encoder import load_head

    head = load_head(LoadOptions(path=path, task="rerank", threads=0))
    pairs = [(q, d) for q, docs in requests for d in docs]
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(0, len(pairs), batch):
            chunk = pairs[i : i + batch]
            head.embed(batch_of(head.tokenizer.encode([q for q, _ in chunk], [d for _, d in chunk])))
        rates.append(len(pairs) / (time.perf_counter() - started))
    head.close()
    return statistics.median(rates)


def served(path: Path, requests: list[tuple[str, list[str]]], rounds: int) -> float:
    import httpx
    from support.daemon import running_daemon

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_daemon(Path(tmp), {"bench-rerank": path}, args=["--engine", "torch"]) as d,
    ):
        client = httpx.Client(timeout=300)

        def one(item: tuple[str, list[str]]) -> None:
            r = client.post(d.http + "/v1/rerank", json={"model": "bench-rerank", "query": item[0], "documents": item[1],
                                                        "cache": False, "return_documents": False})  # fmt: skip
            r.raise_for_status()

        one(requests[0])  # load and warm up
        rates = []
        with ThreadPoolExecutor(len(requests)) as pool:
            for _ in range(rounds):
                started = time.perf_counter()
                list(pool.map(one, requests))
                rates.append(sum(len(docs) for _, docs in requests) / (time.perf_counter() - started))
        client.close()
    return statistics.median(rates)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench rerank", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--documents", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--batch", type=int, default=32, help="offline batch size (the scheduler's encoder_max_batch)"
    )
    args = p.parse_args(argv)
    rng = random.Random(0)
    requests = [
        (_text(rng, 5, 10), [_text(rng, 8, 16) for _ in range(args.documents)]) for _ in range(args.requests)
    ]
    path = _model()
    off = offline(path, requests, args.batch, args.rounds)
    print(f"offline: {off:.1f} pairs/s", flush=True)
    srv = served(path, requests, args.rounds)
    result: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(), "requests": args.requests,
        "documents": args.documents, "offline_pairs_per_s": round(off, 1), "served_pairs_per_s": round(srv, 1),
        "ratio": round(srv / off, 3),
    }  # fmt: skip
    out = REPO / "bench-results" / "rerank.json"
    report.write_json(out, result)  # atomic, like every results file
    print(f"rerank: served {srv:.1f} pairs/s, offline {off:.1f} pairs/s, ratio {srv / off:.2f} ({out})")
    return 0
