"""Sequence- and token-classification heads on ONNX Runtime (rerank, classify, token-classify).

A snapshot that ships an ONNX graph with a ``logits`` output (``onnx/model.onnx``, as the
cross-encoders on the Hub do) is run as it is; otherwise the transformers
``AutoModelFor*Classification`` is exported once with the dynamo exporter into the export cache
(the embedding export's cache, safety rules and exporter settings: safetensors only unless
pickles are allowed, no remote code unless trusted) and checked against the model there
(``graph_heads.check_head``). Tokenizer, padding and the scores are the ones every engine shares
(``hfd.backends.heads``, ``hfd.daemon.tasks.text_post``).

Nothing here imports onnxruntime or torch at module import time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import _hf, graph_heads
from hfd.backends.base import LoadOptions
from hfd.backends.exports import dist_version
from hfd.backends.heads import HeadKind
from hfd.backends.onnx_backend import (
    ONNX_FILE,
    check_session,
    export_dynamo,
    export_options,
    providers_for,
    session_options,
    shipped_graph,
)
from hfd.client.errors import HfdError, ModelUnavailable

log = logging.getLogger(__name__)

# Bump when the way heads are exported changes, so old exports are not reused.
HEAD_REVISION = 1


def load(opts: LoadOptions) -> graph_heads.GraphHead:
    import onnxruntime as ort

    kind = graph_heads.head_kind(opts, "onnxruntime")
    providers = providers_for(opts.device)
    start = time.perf_counter()
    graph, built = prepare(opts, kind)
    tokenizer, head = graph_heads.head_parts(opts, kind)
    options = session_options(opts.device, opts.threads)
    try:
        session = ort.InferenceSession(str(graph), sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelUnavailable(f"onnxruntime cannot load {graph}: {exc}") from exc
    names = [i.name for i in session.get_inputs()]

    def run(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None) -> np.ndarray:
        (logits,) = session.run(["logits"], graph_heads.feeds(names, ids, mask, types))
        return np.asarray(logits)

    files = [f for f in graph.parent.glob(f"{graph.name}*") if f.is_file()]
    model = graph_heads.GraphHead("onnxruntime", run, names, tokenizer, head, device=opts.device, files=files)
    model.threads = opts.threads
    log.info(
        "head loaded",
        extra={"engine": "onnxruntime", "model_path": str(opts.path), "task": opts.task, "device": opts.device,
               "providers": ",".join(session.get_providers()), "exported": built,
               "seconds": round(time.perf_counter() - start, 3)},
    )  # fmt: skip
    return model


def _shipped_head(path: Path) -> Path | None:
    """A graph shipped with the snapshot, when it outputs the head's logits."""
    graph = shipped_graph(path)
    if graph is None:
        return None
    import onnx

    outputs = [o.name for o in onnx.load(str(graph), load_external_data=False).graph.output]
    return graph if "logits" in outputs else None


def prepare(opts: LoadOptions, kind: HeadKind) -> tuple[Path, bool]:
    """The head's ONNX graph: shipped, or exported into the cache and checked there. Returns
    (graph file, whether this call exported it); ``ModelUnavailable`` when it failed its check."""
    _hf.require_model_dir(opts.path)
    shipped = _shipped_head(opts.path)
    if shipped is not None:
        return shipped, False
    options = {**export_options(), "task": graph_heads.EXPORT_TASKS[kind], "head_revision": HEAD_REVISION}
    out, built = graph_heads.export_checked(
        opts, "onnxruntime", dist_version("onnxruntime"), options,
        lambda out, allow_pickle: export(opts.path, out, kind, opts.trust_remote_code, allow_pickle),
    )  # fmt: skip
    return out / ONNX_FILE, built


def export(source: Path, out: Path, kind: HeadKind, trust_remote_code: bool, allow_pickle: bool) -> None:
    """Export the head to ``out/model.onnx``: (input_ids, attention_mask[, token_type_ids]) ->
    logits, batch and sequence dynamic; then check it against the model."""
    try:
        import torch
    except Exception as exc:
        raise ModelUnavailable(f"exporting to ONNX needs torch and transformers (hfd[torch]): {exc}") from exc
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None:
        raise ModelUnavailable("exporting to ONNX needs onnxscript (install hfd[onnxruntime])")
    log.info("onnx head export", extra={"model_path": str(source), "kind": kind})
    try:
        model = graph_heads.reference_model(
            source, kind, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
        )
        with_types = graph_heads.uses_token_types(model)
        ids, mask, types = graph_heads.probe(model)
        # An example smaller than the check's probe in both axes, so a baked-in size fails it.
        width = max(2, ids.shape[1] * 2 // 3)
        example = [
            torch.from_numpy(a[:3, :width].copy())
            for a in ((ids, mask, types) if with_types else (ids, mask))
        ]
        names = list(graph_heads.HEAD_INPUTS[: len(example)])
        dynamic = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
        shapes = tuple(dynamic for _ in names)
        export_dynamo(_Logits(model), tuple(example), out / ONNX_FILE, names, ["logits"], shapes, model)
    except HfdError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"ONNX export of {source} failed: {exc}") from exc
    graph_heads.check_head(
        model, kind, lambda i, m, t: _run_once(out / ONNX_FILE, i, m, t), out, "onnxruntime"
    )


def _run_once(graph: Path, ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None) -> np.ndarray:
    session = check_session(graph)
    names = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(["logits"], graph_heads.feeds(names, ids, mask, types))[0])


def _Logits(model: Any) -> Any:
    import torch

    class Logits(torch.nn.Module):
        """Names the positional export inputs for the head's forward and returns its logits."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> torch.Tensor:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                inputs["token_type_ids"] = token_type_ids
            return self.model(**inputs).logits  # type: ignore[no-any-return]

    return Logits(model)
