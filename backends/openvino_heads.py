"""Sequence- and token-classification heads on OpenVINO (rerank, classify, token-classify).

The snapshot's ``AutoModelFor*Classification`` is exported to IR once by optimum-intel
(``openvino_export.export_ir`` with the ``text-classification`` / ``token-classification``
task: the embedding export's cache, weight formats and safety rules) and checked against the
transformers model when it is made (``graph_heads.check_head``, compiled in f32 on the CPU: what
the graph computes, not a precision hint's rounding). It runs with the encoder's compile
properties (``openvino_backend._compile_properties``: threads and the precision hint, so
``dtype = "float32"`` gives transformers' f32 logits on a bf16-capable CPU). Tokenizer, padding
and scores are the ones every engine shares.

Nothing here imports openvino at module import time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from hfd.backends import _hf, families, graph_heads, openvino_cpu
from hfd.backends.base import LoadOptions
from hfd.backends.exports import dist_version
from hfd.backends.heads import HeadKind
from hfd.backends.openvino_export import IR_FILE, export_ir, export_options, ir_bytes
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

# Bump when the way heads are exported changes, so old exports are not reused.
HEAD_REVISION = 1


def load(opts: LoadOptions) -> graph_heads.GraphHead:
    import openvino as ov

    from hfd.backends.openvino_backend import _compile_properties, _test_fault, ov_device
    from hfd.backends.openvino_export import resolve_weight_format
    from hfd.backends.proving import probe_compile

    kind = graph_heads.head_kind(opts, "openvino")
    device = ov_device(opts.device)
    if device.startswith("NPU"):
        raise ModelUnavailable("OpenVINO classification heads run on CPU or GPU, not the NPU (static shapes)")
    weight_format = resolve_weight_format(opts, device)
    start = time.perf_counter()
    model_dir, built = prepare(opts, kind, weight_format)
    tokenizer, head = graph_heads.head_parts(opts, kind)
    properties = _compile_properties(opts, device)
    xml = model_dir / IR_FILE
    probe_compile(xml, device, properties, opts.cache_dir, static_length=None, fault=_test_fault(opts))
    try:
        compiled = ov.Core().compile_model(str(xml), device, {"PERFORMANCE_HINT": "LATENCY", **properties})
    except Exception as exc:
        raise ModelUnavailable(f"OpenVINO cannot compile {xml} for {device}: {exc}") from exc
    request = compiled.create_infer_request()
    names = [i.get_any_name() for i in compiled.inputs]

    def run(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None) -> np.ndarray:
        request.infer(graph_heads.feeds(names, ids, mask, types))
        return np.array(request.get_tensor("logits").data, dtype=np.float32)

    files = [f for f in model_dir.glob("openvino_*model*.bin")]
    model = graph_heads.GraphHead("openvino", run, names, tokenizer, head, device=device, files=files)
    model.weight_format = weight_format
    model.threads = int(properties.get("INFERENCE_NUM_THREADS", 0))
    try:
        model.precision = openvino_cpu.precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    except Exception:
        model.precision = "unknown"
    log.info(
        "head loaded",
        extra={"engine": "openvino", "model_path": str(opts.path), "task": opts.task, "device": device,
               "weight_format": weight_format, "precision": model.precision, "threads": model.threads,
               "exported": built, "ir_bytes": ir_bytes(model_dir), "seconds": round(time.perf_counter() - start, 3)},
    )  # fmt: skip
    return model


def prepare(opts: LoadOptions, kind: HeadKind, weight_format: str) -> tuple[Path, bool]:
    """The directory of the head's IR, exported into the cache and checked on first use."""
    config = _hf.require_model_dir(opts.path)
    families.check("openvino", "embed", opts.path, config)  # a family the exporter refuses
    options = {**export_options(opts.task, weight_format), "head_revision": HEAD_REVISION}

    def build(out: Path, allow_pickle: bool) -> None:
        export_ir(opts.path, out, opts.task, weight_format, opts.trust_remote_code)
        _check(opts.path, out, kind, weight_format, opts.trust_remote_code, allow_pickle)

    return graph_heads.export_checked(
        opts, "openvino", dist_version("openvino"), options, build, weight_format=weight_format
    )


def _check(
    source: Path, out: Path, kind: HeadKind, weight_format: str, trust_remote_code: bool, allow_pickle: bool
) -> None:
    import openvino as ov

    model = graph_heads.reference_model(
        source, kind, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle
    )
    compiled = ov.Core().compile_model(str(out / IR_FILE), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    names = [i.get_any_name() for i in compiled.inputs]

    def run(ids: np.ndarray, mask: np.ndarray, types: np.ndarray | None) -> np.ndarray:
        outputs = compiled(graph_heads.feeds(names, ids, mask, types))
        by_name = {o.get_any_name(): v for o, v in outputs.items()}
        return np.asarray(by_name["logits"])

    graph_heads.check_head(model, kind, run, out, "openvino", exact=weight_format == "fp32")
