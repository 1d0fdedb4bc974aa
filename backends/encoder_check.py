"""Checking an exported encoder against the model it came from, when it is exported.

An export can compute something other than the model: a wrapper that feeds the attention mask
in a form one architecture reads differently (DeBERTa-v2 took an additive 4-D mask as a boolean
one and answered all-zero vectors), a trace that baked one sequence length into the graph, an
exporter bug. So every encoder export (ONNX, OpenVINO IR) runs a small probe batch, with rows of
different lengths so padding matters, next to the transformers model, and compares the token
embeddings at every real (unpadded) position. The result is written into the export directory
(``hfd-check.json``), so it is cached with the export; an export that fails is never used: the
engine refuses the model with the reason and the manager falls back to the next engine.

Token embeddings rather than pooled vectors: the graph serves every pooling config, and a
per-token comparison cannot be hidden by an average.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hfd._atomic_files import atomic_write_text
from hfd.backends import _hf
from hfd.backends.numpy_encoder import encoder_feeds
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

CHECK_FILE = "hfd-check.json"
# Least per-token cosine an export must reach, by how its weights are stored.
THRESHOLDS = {"fp32": 0.999, "fp16": 0.995, "int8": 0.98}
_PROBE_LENGTHS = (37, 18, 5, 1)

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]


def probe_batch(model_config: Any, pad_token_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``input_ids`` and ``attention_mask`` ``[4, n]``, right-padded, rows of different lengths
    (the longest past a 16-token local-attention window), fixed pseudo-random ids."""
    vocab = max(2, _hf.config_int(model_config, "vocab_size"))
    positions = _hf.config_int(model_config, "max_position_embeddings")
    # RoBERTa-style models start positions after the padding index: stay clear of the end.
    longest = min(_PROBE_LENGTHS[0], positions - 4) if positions > 8 else 4
    lengths = [max(1, min(n, longest)) for n in _PROBE_LENGTHS]
    pad = int(pad_token_id) if pad_token_id is not None else 0
    rng = np.random.RandomState(0)
    ids = np.full((len(lengths), longest), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        values = rng.randint(min(5, vocab - 1), vocab, size=n)
        values[values == pad] = (pad + 1) % vocab  # a pad id among real tokens shifts positions
        ids[row, :n] = values
        mask[row, :n] = 1
    return ids, mask


def reference_hidden(model: Any, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The transformers model's token embeddings for the probe batch (its own 2-D mask)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return np.asarray(out.last_hidden_state.float().numpy())


def compare(
    reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray, threshold: float
) -> dict[str, Any]:
    keep = mask.astype(bool)
    if candidate.shape != reference.shape:
        return {
            "passed": False,
            "reason": f"output shape {list(candidate.shape)}, expected {list(reference.shape)}",
        }
    a, b = reference[keep].astype(np.float64), candidate[keep].astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)
    worst = float(np.nan_to_num(cosines, nan=0.0).min())
    result: dict[str, Any] = {"passed": worst >= threshold, "min_cosine": round(worst, 6), "threshold": threshold,
                              "tokens": int(keep.sum()), "rows": int(mask.shape[0])}  # fmt: skip
    if not result["passed"]:
        result["reason"] = (
            f"token embeddings differ from the transformers model's on a probe batch "
            f"(least cosine {worst:.4f}, at least {threshold} needed)"
        )
    return result


def run_check(model: Any, run: Runner, pad_token_id: int | None, threshold: float) -> dict[str, Any]:
    """Run the probe through the source ``model`` and the export's ``run``; the comparison."""
    ids, mask = probe_batch(model.config, pad_token_id)
    reference = reference_hidden(model, ids, mask)
    try:
        candidate = np.asarray(run(ids, mask), dtype=np.float32)
    except Exception as exc:
        return {
            "passed": False,
            "reason": f"the export failed on the probe batch: {exc}",
            "threshold": threshold,
        }
    return compare(reference, candidate, mask, threshold)


def load_reference(source: Path, *, trust_remote_code: bool, allow_pickle: bool) -> Any:
    """The source model in fp32, as transformers loads it, with the attention the torch engine
    would pick."""
    from transformers import AutoModel

    from hfd.backends.base import LoadOptions
    from hfd.backends.graph_heads import fp32_model
    from hfd.backends.torch_backend import attention_implementation

    opts = LoadOptions(path=source, task="embed", trust_remote_code=trust_remote_code)
    attention = attention_implementation(AutoModel, opts)
    return fp32_model(
        AutoModel, source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle, attention=attention
    )


def write(export_dir: Path, result: dict[str, Any]) -> None:
    atomic_write_text(export_dir / CHECK_FILE, json.dumps(result, indent=2, sort_keys=True) + "\n")


def read(export_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((export_dir / CHECK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def require_passed(result: dict[str, Any], engine: str, source: Path) -> None:
    """``ModelUnavailable`` with the check's reason when the export failed it."""
    if result.get("passed"):
        return
    reason = str(result.get("reason") or "it failed the export check")
    raise ModelUnavailable(
        f"the {engine} export of {source} is not used: {reason}",
        details={"engine": engine, "check": result},
    )


def weights_identity(path: Path) -> str:
    """What an encoder graph is built from: ``config.json``, the top-level weights and any
    remote code, by content. Tokenizer and sentence-transformers files play no part, so folders
    that wrap the same transformer in different pooling configs share one export."""
    from hfd.backends.exports import _file_digest

    h = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file()):
        if file.name == "config.json" or file.suffix in (*_hf.SAFE_SUFFIXES, *_hf.PICKLE_SUFFIXES, ".py"):
            h.update(f"{file.name}\0{file.stat().st_size}\0{_file_digest(file)}\n".encode())
    return f"weights-sha256:{h.hexdigest()}"


def check_openvino(source: Path, out: Path, ir_file: str, weight_format: str, *, trust_remote_code: bool,
                   allow_pickle: bool) -> dict[str, Any]:  # fmt: skip
    """Check a fresh OpenVINO IR export in ``out`` against ``source`` and record the result there.

    The IR is compiled on the CPU in f32: this checks what the graph computes, not a device's
    or a precision hint's rounding (f32 also compiles safely at any thread count).
    """
    import openvino as ov

    model = load_reference(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    compiled = ov.Core().compile_model(str(out / ir_file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [i.get_any_name() for i in compiled.inputs]

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        outputs = compiled(encoder_feeds(names, ids, mask))
        by_name = {o.get_any_name(): v for o, v in outputs.items()}
        return np.asarray(by_name.get("last_hidden_state", next(iter(outputs.values()))))

    pad = getattr(model.config, "pad_token_id", None)
    result = run_check(
        model, run, pad if isinstance(pad, int) else None, THRESHOLDS.get(weight_format, 0.999)
    )
    write(out, result)
    log.info("openvino export checked", extra={"model_path": str(source), **result})
    return result


def require_checked(export_dir: Path, engine: str, source: Path) -> None:
    """Refuse an export whose check failed, or that carries no check."""
    result = read(export_dir)
    if result is None:
        raise ModelUnavailable(
            f"the {engine} export {export_dir} has no {CHECK_FILE}; delete it to export again"
        )
    require_passed(result, engine, source)
