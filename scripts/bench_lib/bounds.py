"""The machine's bounds on decoding, measured in the same run as the chat workloads.

Two figures of the box, at the engine's thread count, best of a few tries (``measure``, run in a
child process so its thread pool does not linger in the benchmark's):

- memory bandwidth: a 1 GiB fp32 matrix times a vector (every byte read once: "read") and a
  copy of 1 GiB into another (bytes read plus bytes written: "copy");
- matmul peaks: a square ``matmul_n`` x ``matmul_n`` product, 2 n^3 operations, in fp32, in bf16
  and in int8 (``torch._int_mm``, int32 sums: the dot products of int8 weights whose activations
  are quantized too, OpenVINO's with dynamic quantization and llama.cpp's q8_0).

And what they allow a model (the pure arithmetic below, unit-tested):

- one stream decodes at most ``read bandwidth / weight bytes read per token`` tokens/s: every
  weight is read once per token, except the input embedding table, of which a token reads one row
  (its table is not counted when the output head is a separate matrix); KV-cache reads are left
  out (small at the benchmark's short contexts), so the bound is an upper one;
- ``n`` streams decode at most ``min(matmul peak / FLOPs per token, n x the one-stream bound)``
  tokens/s together (2 FLOPs per weight read per token; the roofline of the two limits). The
  peak is the one of what the server computes in (``compute_kind``: int8 weights in int8, bf16
  compute in bf16, else fp32), never below the fp32 one: an fp32 peak under a bf16 or int8
  engine put batched figures at 125-195% of their "bound".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

GIB = 1 << 30
# Bytes each weight takes in memory, per weight format (GGUF's q8_0: 32 int8 weights and an
# fp16 scale per block of 32; q4_0: 32 4-bit weights and an fp16 scale).
BYTES_PER_WEIGHT: dict[str, float] = {
    "f32": 4.0, "fp32": 4.0, "float32": 4.0,
    "f16": 2.0, "fp16": 2.0, "float16": 2.0, "bf16": 2.0, "bfloat16": 2.0,
    "int8": 1.0, "q8_0": 34 / 32,
    "int4": 0.5, "q4_0": 18 / 32,
}  # fmt: skip
_EMBEDDING_NAMES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight")


@dataclass(frozen=True)
class Weights:
    """A model's parameters as decoding reads them."""

    parameters: int  # every parameter of the checkpoint
    embedding_rows: int  # the input embedding table's rows (0 when it is also the output head)
    hidden: int  # its row width

    @property
    def read_per_token(self) -> int:
        """Parameters one decoding step reads for one token: all but the embedding table's
        other rows."""
        skipped = max(self.embedding_rows - 1, 0) * self.hidden
        return self.parameters - skipped


def weights_of(model: Path) -> Weights:
    """``model``'s parameter count from its safetensors headers, and its embedding table."""
    from safetensors import safe_open

    parameters, table = 0, (0, 0)
    names: set[str] = set()
    for file in sorted(model.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                shape = f.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= int(dim)
                parameters += count
                names.add(name)
                if name.endswith(_EMBEDDING_NAMES) and len(shape) == 2:
                    table = (int(shape[0]), int(shape[1]))
    if not parameters:
        raise ValueError(f"{model} has no safetensors weights to count")
    tied = not any(n.endswith("lm_head.weight") for n in names)
    return Weights(parameters=parameters, embedding_rows=0 if tied else table[0], hidden=table[1])


def bytes_per_weight(weight_format: str | None, precision: str | None = None) -> float:
    """Bytes a weight takes as the engine reads it: the weight format's, or the compute
    precision's when that is narrower (an fp32 checkpoint compiled to bf16 is read as bf16)."""
    known = [
        BYTES_PER_WEIGHT[f.lower()] for f in (weight_format, precision) if f and f.lower() in BYTES_PER_WEIGHT
    ]
    if not known:
        raise ValueError(f"unknown weight format {weight_format!r} (precision {precision!r})")
    return min(known)


def one_stream_bound(read_bytes_per_s: float, weights: Weights, per_weight: float) -> float:
    """Tokens/s one stream can decode at most: bandwidth over the weight bytes read per token."""
    return read_bytes_per_s / (weights.read_per_token * per_weight)


def batched_bound(
    flops_per_s: float, read_bytes_per_s: float, weights: Weights, per_weight: float, streams: int
) -> float:
    """Tokens/s ``streams`` streams can decode together at most: the matmul peak over 2 FLOPs
    per weight per token, or ``streams`` times the one-stream bound, whichever is lower."""
    compute = flops_per_s / (2.0 * weights.read_per_token)
    return min(compute, streams * one_stream_bound(read_bytes_per_s, weights, per_weight))


def compute_kind(weight_format: str | None, precision: str | None = None) -> str:
    """What a server's matmuls compute in: "int8" for 8-bit weights (their activations are
    quantized too), "bf16" for bf16 compute, else "fp32"."""
    if (weight_format or "").lower() in ("int8", "q8_0"):
        return "int8"
    return "bf16" if (precision or "").lower() in ("bf16", "bfloat16") else "fp32"


_PEAK_KEYS = {
    "fp32": "matmul_flops_per_s",
    "bf16": "bf16_matmul_flops_per_s",
    "int8": "int8_matmul_ops_per_s",
}


def compute_peak(machine: dict[str, Any], kind: str = "fp32") -> float:
    """The matmul peak for ``kind`` (``compute_kind``), at least the fp32 one (a figure this box
    could not measure, or an emulated path slower than fp32, does not lower the bound)."""
    fp32 = float(machine["matmul_flops_per_s"])
    return max(fp32, float(machine.get(_PEAK_KEYS[kind]) or 0.0))


def share(figure: float | None, bound: float | None) -> float | None:
    """A figure's share of its bound (1.0: at the bound)."""
    if not figure or not bound:
        return None
    return round(figure / bound, 3)


def bound_for(
    machine: dict[str, Any], weights: Weights, per_weight: float, streams: int, kind: str = "fp32"
) -> float:
    """The bound on ``streams`` streams' tokens/s, from ``measure``'s figures."""
    read = float(machine["read_bytes_per_s"])
    if streams <= 1:
        return one_stream_bound(read, weights, per_weight)
    return batched_bound(compute_peak(machine, kind), read, weights, per_weight, streams)


def annotate(levels: list[dict[str, Any]], machine: dict[str, Any], weights: Weights, per_weight: float,
             unit: str = "tokens", kind: str = "fp32") -> None:  # fmt: skip
    """Put each level's bound and its share of it beside its figure (in place)."""
    for level in levels:
        bound = bound_for(machine, weights, per_weight, int(level["concurrency"]), kind)
        level["bound_tokens_per_s"] = round(bound, 1)
        level["share_of_bound"] = share(level.get(f"{unit}_per_s"), bound)


def model_bounds(model: Path, weight_format: str | None, precision: str | None) -> dict[str, Any]:
    """What the report keeps about a model for its bounds."""
    weights = weights_of(model)
    return {**asdict(weights), "read_per_token": weights.read_per_token, "weight_format": weight_format,
            "precision": precision, "bytes_per_weight": bytes_per_weight(weight_format, precision),
            "compute": compute_kind(weight_format, precision)}  # fmt: skip


def for_generation(
    generation: dict[str, Any], machine: dict[str, Any], model: Path, row: dict[str, Any]
) -> dict[str, Any]:
    """The main bench's generation part beside its bounds: each served level and the offline
    batch get their bound and share (in place); returns what the report keeps, and prints it."""
    info = model_bounds(model, row.get("weight_format"), row.get("precision"))
    weights = weights_of(model)
    annotate(generation["served"], machine, weights, info["bytes_per_weight"], kind=info["compute"])
    offline = generation["offline"]
    bound = bound_for(
        machine, weights, info["bytes_per_weight"], int(offline.get("requests") or 1), info["compute"]
    )
    offline["bound_tokens_per_s"] = round(bound, 1)
    offline["share_of_bound"] = share(offline.get("tokens_per_s"), bound)
    print(f"\n  bounds ({describe(machine)}; {info['read_per_token'] / 1e6:.1f}M weights read per token, "
          f"{info['bytes_per_weight']:g} bytes each):")  # fmt: skip
    for lv in generation["served"]:
        print(f"    {lv['door']:5} {lv['concurrency']:>4} clients: {lv['tokens_per_s']:>8.1f} of "
              f"{lv['bound_tokens_per_s']:>8.1f} tokens/s ({percent(lv['share_of_bound'])})")  # fmt: skip
    print(f"    offline batch: {offline.get('tokens_per_s')} of {offline['bound_tokens_per_s']} tokens/s "
          f"({percent(offline['share_of_bound'])})")  # fmt: skip
    return {"machine": machine, "model": info}


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


# ----------------------------------------------------------------------------- measuring


def _best(call: Any, repeats: int) -> float:
    call()  # first touch: page faults and kernel choice are not measured
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def _measure_here(threads: int, size: int, matmul_n: int, repeats: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    x = torch.rand(matmul_n, matmul_n, dtype=torch.float32)
    y = torch.rand(matmul_n, matmul_n, dtype=torch.float32)
    mm_s = _best(lambda: torch.mm(x, y), repeats)
    xb, yb = x.bfloat16(), y.bfloat16()
    bf16_s = _best(lambda: torch.mm(xb, yb), repeats)
    int8_s: float | None = None
    xi = torch.randint(-128, 128, (matmul_n, matmul_n), dtype=torch.int8)
    yi = torch.randint(-128, 128, (matmul_n, matmul_n), dtype=torch.int8)
    try:
        int8_s = _best(lambda: torch._int_mm(xi, yi), repeats)
    except (RuntimeError, AttributeError):  # a torch without int8 matmul on this CPU
        int8_s = None
    a = torch.ones(size // 4, dtype=torch.float32)
    b = torch.empty_like(a)
    # Read: a sum, the plainest streaming read. A matrix-vector product of a tall, narrow matrix
    # (what this measured before) read at 16-26 GB/s on the Zen 5 box where the sum read at
    # 40-74 (53-57 in the same minute), and llama.cpp's f32 decode ran at 146% of its bound.
    read_s = _best(lambda: a.sum(), repeats)
    copy_s = _best(lambda: b.copy_(a), repeats)
    return {
        "threads": threads,
        "bytes": size,
        "repeats": repeats,
        "read_bytes_per_s": size / read_s,
        "copy_bytes_per_s": 2 * size / copy_s,
        "matmul_n": matmul_n,
        "matmul_flops_per_s": 2.0 * matmul_n**3 / mm_s,
        "bf16_matmul_flops_per_s": 2.0 * matmul_n**3 / bf16_s,
        "int8_matmul_ops_per_s": None if int8_s is None else 2.0 * matmul_n**3 / int8_s,
    }


# The smoke run's sizes (``--quick``): seconds, not a measurement to quote.
QUICK: dict[str, int] = {"size": 64 << 20, "matmul_n": 512, "repeats": 2}


def measure(threads: int, *, size: int = GIB, matmul_n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """The box's read and copy bandwidth (bytes/s) and matmul peaks (fp32, bf16, int8; per s) at ``threads``
    threads, best of ``repeats``, in a child process."""
    cmd = [sys.executable, __file__, str(threads), str(size), str(matmul_n), str(repeats)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        raise RuntimeError(f"measuring the machine's bounds failed:\n{run.stderr[-2000:]}")
    return dict(json.loads(run.stdout.strip().splitlines()[-1]))


def describe(machine: dict[str, Any]) -> str:
    return (
        f"read {machine['read_bytes_per_s'] / 1e9:.1f} GB/s, copy {machine['copy_bytes_per_s'] / 1e9:.1f} GB/s, "
        f"matmul fp32 {machine['matmul_flops_per_s'] / 1e9:.0f} / bf16 "
        f"{(machine.get('bf16_matmul_flops_per_s') or 0) / 1e9:.0f} / int8 "
        f"{(machine.get('int8_matmul_ops_per_s') or 0) / 1e9:.0f} G/s at {machine['threads']} threads"
    )


if __name__ == "__main__":
    t, s, n, r = (int(v) for v in sys.argv[1:5])
    print(json.dumps(_measure_here(t, s, n, r)))
