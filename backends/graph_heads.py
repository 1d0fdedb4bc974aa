"""Classification heads on engines that run an exported graph (ONNX Runtime, OpenVINO).

The graph is the snapshot's ``AutoModelForSequenceClassification`` or
``AutoModelForTokenClassification`` from ``input_ids``, ``attention_mask`` (and
``token_type_ids`` when the model reads segment ids) to ``logits``. Everything around it is the
same for every engine and lives here or in ``hfd.backends.heads``: the tokenizer (texts and
pairs, offsets), the padding (``heads.pad_batch``, which the torch head uses too), and the check
of a fresh export against the transformers model (``check_head``: logits on a probe batch,
recorded in the export like the encoder check). The scores are made from the logits by the one
post-processing of ``hfd.daemon.tasks.text_post``, whatever engine computed them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import _hf, encoder_check
from hfd.backends.base import LoadOptions, TokenizedBatch
from hfd.backends.exports import ExportCache, export_key
from hfd.backends.heads import (
    HEAD_OF_TASK,
    HeadConfig,
    HeadKind,
    HeadTokenizer,
    check_lengths,
    head_config,
    pad_batch,
)
from hfd.client.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)

# The exporters' names of the two heads (optimum's tasks; the ONNX export's metadata).
EXPORT_TASKS: dict[HeadKind, str] = {"sequence": "text-classification", "token": "token-classification"}
HEAD_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# A fresh fp32 export's logits on the probe batch must be within this of the model's.
LOGIT_ATOL = 1e-4
LOGIT_RTOL = 1e-3
LOOSE_RTOL = 0.05  # fp16 or int8 weights

# (input_ids, attention_mask, token_type_ids or None) -> logits
Runner = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], np.ndarray]


def head_kind(opts: LoadOptions, engine: str) -> HeadKind:
    kind = HEAD_OF_TASK.get(opts.task)
    if kind is None:
        raise InvalidRequest(f"the {engine} engine has no head for task {opts.task!r}", param="task")
    return kind


def head_parts(opts: LoadOptions, kind: HeadKind) -> tuple[HeadTokenizer, HeadConfig]:
    """The tokenizer (limited to the model's positions, as the torch head is) and the labels."""
    config = _hf.require_model_dir(opts.path)
    model_config = _hf.model_config(opts.path, trust_remote_code=opts.trust_remote_code)
    limit = _hf.max_positions(model_config) or 512
    tokenizer = HeadTokenizer.from_path(opts.path, max_length=limit, trust_remote_code=opts.trust_remote_code)
    return tokenizer, head_config(config, kind)


class GraphHead:
    """An ``EncoderModel`` over an exported classification graph: ``embed`` returns float32
    logits, ``(n, labels)`` or ``(n, tokens, labels)`` right-padded, as ``TorchHead`` does."""

    weight_format = "fp32"
    threads = 0
    precision = "f32"

    def __init__(
        self,
        name: str,
        run: Runner,
        inputs: Sequence[str],
        tokenizer: HeadTokenizer,
        head: HeadConfig,
        *,
        device: str,
        files: Sequence[Path],
        close: Callable[[], None] | None = None,
    ) -> None:
        unknown = set(inputs) - set(HEAD_INPUTS)
        if unknown or "input_ids" not in inputs:
            raise ModelUnavailable(f"unexpected classification graph inputs {sorted(inputs)}")
        self.name = name
        self.tokenizer = tokenizer
        self.head = head
        self.device = device
        self.max_length = int(tokenizer.max_length)
        self.dimensions = head.num_labels
        self._run = run
        self._types = "token_type_ids" in inputs
        self._files = list(files)
        self._close = close

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        return self.tokenizer.tokenize(texts)

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        if not batch.ids:
            shape = (0, self.dimensions) if self.head.kind == "sequence" else (0, 0, self.dimensions)
            return np.zeros(shape, dtype=np.float32)
        check_lengths(batch, self.max_length)
        ids, mask, types = pad_batch(batch, self.tokenizer.pad_token_id)
        logits = self._run(ids, mask, types if self._types else None)
        return np.ascontiguousarray(logits, dtype=np.float32)

    def memory_bytes(self) -> int:
        return sum(f.stat().st_size for f in self._files if f.is_file())

    def close(self) -> None:
        if self._close is not None:
            self._close()
        self._close = None


def feeds(
    names: Sequence[str], ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The graph's inputs by name; segment ids are zeros where none are given."""
    given = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types if types is not None else np.zeros_like(ids),
    }
    return {name: given[name] for name in names}


def reference_model(source: Path, kind: HeadKind, *, trust_remote_code: bool, allow_pickle: bool) -> Any:
    """The transformers head in fp32 with eager attention (the export's and the check's model)."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if kind == "token" else AutoModelForSequenceClassification
    return fp32_model(auto, source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def fp32_model(
    auto: Any, source: Path, *, trust_remote_code: bool, allow_pickle: bool, attention: str = "eager"
) -> Any:
    """``auto.from_pretrained`` as every exporter (and the encoder export check) loads its
    source: fp32, eager attention unless told, local files only, safetensors unless pickles are
    allowed."""
    import torch

    return auto.from_pretrained(
        source,
        local_files_only=True,
        use_safetensors=_hf.check_weights(source, allow_pickle=allow_pickle),
        trust_remote_code=trust_remote_code,
        dtype=torch.float32,
        attn_implementation=attention,
    ).eval()


def export_checked(
    opts: LoadOptions,
    engine: str,
    engine_version: str,
    options: dict[str, Any],
    build: Callable[[Path, bool], None],
    **meta: Any,
) -> tuple[Path, bool]:
    """An export of the snapshot at ``opts.path`` from the export cache, built by
    ``build(out, allow_pickle)`` on first use (which records its check there), keyed by the
    weights' identity; refused when the check failed. Returns (directory, whether built now)."""
    config = _hf.require_model_dir(opts.path)
    allow_pickle = bool(opts.extra.get("allow_pickle"))
    _hf.check_weights(opts.path, allow_pickle=allow_pickle)  # before anything is exported
    if opts.cache_dir is None:
        raise ModelUnavailable(f"the {engine} engine needs a cache directory for its exports")
    commit = opts.extra.get("commit") or encoder_check.weights_identity(opts.path)
    key = export_key(opts.path, engine=engine, engine_version=engine_version, options=options, commit=commit)
    meta = {"engine": engine, "task": opts.task, "source": str(opts.path), "model_type": config.get("model_type"),
            "options": options, **meta}  # fmt: skip
    result = ExportCache(opts.cache_dir).get_or_build(key, lambda out: build(out, allow_pickle), meta)
    encoder_check.require_checked(result.path, engine, opts.path)
    return result.path, result.built


def uses_token_types(model: Any) -> bool:
    import inspect

    return "token_type_ids" in inspect.signature(model.forward).parameters


def probe(model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The encoder check's probe batch, with segment ids: the last third of each row is the
    second segment, so a graph that ignores them fails the check."""
    pad = getattr(model.config, "pad_token_id", None)
    ids, mask = encoder_check.probe_batch(model.config, pad if isinstance(pad, int) else None)
    types = np.zeros_like(ids)
    vocab_types = _hf.config_int(model.config, "type_vocab_size")
    if vocab_types >= 2:
        for row, n in enumerate(mask.sum(axis=1)):
            types[row, int(n) - int(n) // 3 : int(n)] = 1
    return ids, mask, types


def check_head(
    model: Any, kind: HeadKind, run: Runner, out: Path, engine: str, *, exact: bool = True
) -> dict[str, Any]:
    """Run the probe batch through the transformers head and the export; record the comparison
    of their logits at every real position in ``out`` (``hfd-check.json``). ``exact``: fp32
    weights (else fp16/int8 weights, compared within a few percent)."""
    import torch

    ids, mask, types = probe(model)
    with_types = uses_token_types(model)
    inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if with_types:
        inputs["token_type_ids"] = torch.from_numpy(types)
    with torch.no_grad():
        reference = model(**inputs).logits.float().numpy()
    try:
        candidate = np.asarray(run(ids, mask, types if with_types else None), dtype=np.float32)
    except Exception as exc:
        result: dict[str, Any] = {"passed": False, "reason": f"the export failed on the probe batch: {exc}"}
    else:
        rtol = LOGIT_RTOL if exact else LOOSE_RTOL
        result = compare_logits(reference, candidate, mask if kind == "token" else None, rtol)
    encoder_check.write(out, result)
    log.info("head export checked", extra={"engine": engine, "kind": kind, **result})
    return result


def compare_logits(
    reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray | None, rtol: float = LOGIT_RTOL
) -> dict[str, Any]:
    if candidate.shape != reference.shape:
        return {
            "passed": False,
            "reason": f"logits shape {list(candidate.shape)}, expected {list(reference.shape)}",
        }
    keep = mask.astype(bool) if mask is not None else np.ones(reference.shape[0], dtype=bool)
    a, b = reference[keep].astype(np.float64), candidate[keep].astype(np.float64)
    worst = float(np.abs(a - b).max()) if a.size else 0.0
    bound = LOGIT_ATOL + rtol * float(np.abs(a).max() if a.size else 0.0)
    result: dict[str, Any] = {
        "passed": worst <= bound,
        "max_abs_diff": worst,
        "bound": bound,
        "rows": int(keep.sum()),
    }
    if not result["passed"]:
        result["reason"] = (
            f"logits differ from the transformers model's on a probe batch (by {worst:.3g}, at most {bound:.3g})"
        )
    return result
