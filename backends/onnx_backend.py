"""The ONNX Runtime engine, for encoders (embeddings).

A snapshot that ships an ONNX graph (``model.onnx`` or ``onnx/model.onnx``) is run as it is;
otherwise the transformers model is exported once with ``torch.onnx.export`` (the dynamo
exporter) into the export cache, and checked against the model there (``encoder_check``). The graph maps ``input_ids``/``attention_mask`` to token embeddings; tokenization and
pooling are done in numpy (``hfd.backends.numpy_encoder``), as for the OpenVINO engine.

The execution provider follows the device: ``cpu``, ``cuda:N`` (CUDA, or ROCm on an AMD build),
``coreml``, ``openvino``, ``qnn``, ``directml``. The CPU provider is always appended as the
fallback for operators the accelerator lacks.

Nothing here imports onnxruntime or torch at module import time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hfd.backends import _hf, cpu_pools, encoder_check, hardware, load_progress, preload
from hfd.backends.base import LoadOptions, Task, TokenizedBatch
from hfd.backends.exports import ExportCache, dist_version, export_key
from hfd.backends.numpy_encoder import EncoderHead, GraphEncoder, encoder_feeds, load_head, pool
from hfd.backends.policy import device_kind
from hfd.client.errors import HfdError, InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    from hfd.backends.graph_heads import GraphHead

log = logging.getLogger(__name__)

# Bump when the way we export changes, so old exports are not reused.
# 2: the dynamo exporter with the model's own 2-D mask, checked against the model.
# 3: exported from an example smaller than the check's probe batch.
EXPORT_REVISION = 3
ONNX_OPSET = 18
ONNX_FILE = "model.onnx"

# hfd device kind -> execution provider names to try, in order.
_PROVIDERS: dict[str, tuple[str, ...]] = {
    "cpu": ("CPUExecutionProvider",),
    "cuda": ("CUDAExecutionProvider", "ROCMExecutionProvider", "MIGraphXExecutionProvider"),
    "rocm": ("ROCMExecutionProvider", "MIGraphXExecutionProvider"),
    "coreml": ("CoreMLExecutionProvider",),
    "openvino": ("OpenVINOExecutionProvider",),
    "qnn": ("QNNExecutionProvider",),
    "directml": ("DmlExecutionProvider",),
    "dml": ("DmlExecutionProvider",),
}


class OnnxBackend:
    name = "onnxruntime"
    tasks: frozenset[Task] = frozenset({"embed"})

    def available(self) -> tuple[bool, str]:
        probe = hardware.probe_onnxruntime()
        return probe.installed, probe.reason

    def devices(self) -> list[str]:
        return [d.id for d in hardware.probe_onnxruntime().devices]

    def load_encoder(self, opts: LoadOptions) -> OnnxEncoder | GraphHead:
        if opts.task != "embed":  # a classification head (rerank, classify, token-classify)
            from hfd.backends import onnx_heads

            return onnx_heads.load(opts)
        providers = providers_for(opts.device)
        if opts.weight_format not in (None, "fp32"):
            log.warning(
                "weight format ignored: the onnxruntime engine runs fp32 graphs",
                extra={"weight_format": opts.weight_format, "model_path": str(opts.path)},
            )
        start = time.perf_counter()
        graph, built = prepare_onnx(opts)
        head = load_head(opts.path, trust_remote_code=opts.trust_remote_code, cache_dir=opts.cache_dir)
        load_progress.report("compiling")  # the session optimises and compiles the graph
        encoder = OnnxEncoder(graph, head, opts.device, providers, opts.threads)
        log.info(
            "encoder loaded",
            extra={"engine": self.name, "model_path": str(opts.path), "device": opts.device,
                   "providers": ",".join(encoder.providers), "exported": built,
                   "seconds": round(time.perf_counter() - start, 3)},
        )  # fmt: skip
        return encoder

    def load_image_text(self, opts: LoadOptions) -> Any:
        from hfd.backends import clip_graph  # CLIP, SigLIP: the text and vision towers

        return clip_graph.load(opts, self.name)

    def load_generator(self, opts: LoadOptions) -> Any:
        raise InvalidRequest("the onnxruntime engine runs encoders only; use torch or openvino to generate")


def providers_for(device: str) -> list[Any]:
    """The execution providers for an hfd device string, available here, CPU last."""
    probe = hardware.probe_onnxruntime()
    if not probe.installed:
        raise ModelUnavailable(f"the onnxruntime engine is not available: {probe.reason}")
    kind = device_kind(device)
    wanted = _PROVIDERS.get(kind)
    if wanted is None:
        raise InvalidRequest(f"the onnxruntime engine does not run on {device!r}", param="device")
    provider = next((p for p in wanted if p in probe.providers), None)
    if provider is None:
        why = probe.unavailable.get(kind, f"onnxruntime has none of {', '.join(wanted)} here")
        raise ModelUnavailable(
            f"device {device!r} is not available to onnxruntime: {why}", details={"device": device}
        )
    if provider == "CPUExecutionProvider":
        return [provider]
    index = device.replace(":", ".").partition(".")[2]
    options: dict[str, Any] = {"device_id": int(index)} if index.isdigit() else {}
    return [(provider, options), "CPUExecutionProvider"]


# -- export -------------------------------------------------------------------------------------


def shipped_graph(path: Path) -> Path | None:
    for candidate in (path / ONNX_FILE, path / "onnx" / ONNX_FILE):
        if candidate.is_file():
            return candidate
    return None


def export_options() -> dict[str, Any]:
    return {
        "format": "onnx",
        "task": "feature-extraction",
        "opset": ONNX_OPSET,
        "exporter": "dynamo",
        "torch": dist_version("torch"),
        "onnxscript": dist_version("onnxscript"),
        "transformers": dist_version("transformers"),
        "revision": EXPORT_REVISION,
    }


def onnx_export_key(opts: LoadOptions) -> str:
    """The export cache key of a model's ONNX graph."""
    return export_key(
        opts.path,
        engine="onnxruntime",
        engine_version=dist_version("onnxruntime"),
        options=export_options(),
        # The graph depends on the config and weights only: folders that wrap one transformer
        # in different pooling configs share its export.
        commit=opts.extra.get("commit") or encoder_check.weights_identity(opts.path),
    )


def prepare_onnx(opts: LoadOptions) -> tuple[Path, bool]:
    """The ONNX graph to run: shipped with the model, or exported into the cache on first use
    (and checked against the model there). Returns (graph file, whether this call exported it);
    ``ModelUnavailable`` when the export failed its check."""
    config = _hf.require_model_dir(opts.path)
    shipped = shipped_graph(opts.path)
    if shipped is not None:
        return shipped, False
    allow_pickle = bool(opts.extra.get("allow_pickle"))
    _hf.check_weights(opts.path, allow_pickle=allow_pickle)
    if opts.cache_dir is None:
        raise ModelUnavailable("the onnxruntime engine needs a cache directory for its exports")
    key = onnx_export_key(opts)
    meta = {
        "engine": "onnxruntime",
        "task": "embed",
        "source": str(opts.path),
        "model_type": config.get("model_type"),
        "options": export_options(),
    }
    result = ExportCache(opts.cache_dir).get_or_build(
        key, lambda out: export_onnx(opts.path, out, opts.trust_remote_code, allow_pickle), meta
    )
    check = encoder_check.read(result.path)
    if check is None:  # exported before checks were recorded
        raise ModelUnavailable(f"the onnxruntime export {result.path} has no {encoder_check.CHECK_FILE}")
    encoder_check.require_passed(check, "onnxruntime", opts.path)
    return result.path / ONNX_FILE, result.built


def export_onnx(source: Path, out: Path, trust_remote_code: bool, allow_pickle: bool) -> None:
    """Export a transformers encoder to ``out/model.onnx``: (input_ids, attention_mask) ->
    last_hidden_state, batch and sequence dynamic; then check it against the model
    (``out/hfd-check.json``).

    The model gets its own 2-D attention mask, exactly as transformers would: no wrapper
    reshapes it (an additive 4-D mask is read as a boolean one by DeBERTa-v2 and refused by
    MPNet). The graph comes from ``torch.export`` (the dynamo exporter): it keeps the batch and
    sequence sizes symbolic through transformers' mask code, where the TorchScript tracer fails
    or bakes the example's length into relative-position tables.
    """
    preload.wait_for_transformers()
    try:
        import torch
        from transformers import AutoModel

        from hfd.backends.graph_heads import fp32_model
    except Exception as exc:
        raise ModelUnavailable(f"exporting to ONNX needs torch and transformers (hfd[torch]): {exc}") from exc
    if importlib.util.find_spec("onnxscript") is None:
        raise ModelUnavailable("exporting to ONNX needs onnxscript (install hfd[onnxruntime])")
    log.info("onnx export", extra={"model_path": str(source)})
    try:
        model = fp32_model(AutoModel, source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
        # The example is smaller than the check's probe batch in both axes, so a size the
        # export baked in fails the check instead of hiding in it.
        probe_ids, probe_mask = encoder_check.probe_batch(model.config, _pad_id(model))
        width = max(2, probe_ids.shape[1] * 2 // 3)
        ids, mask = (
            torch.from_numpy(probe_ids[:3, :width].copy()),
            torch.from_numpy(probe_mask[:3, :width].copy()),
        )
        # AUTO: torch.export infers each axis's range (a position table bounds the tokens)
        # instead of failing on a guard and retrying.
        dynamic = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
        export_dynamo(
            _Positional(model), (ids, mask), out / ONNX_FILE, ["input_ids", "attention_mask"],
            ["last_hidden_state"], {"input_ids": dynamic, "attention_mask": dynamic}, model,
        )  # fmt: skip
    except HfdError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"ONNX export of {source} failed: {exc}") from exc
    result = encoder_check.run_check(
        model,
        lambda i, m: _run_graph(out / ONNX_FILE, i, m),
        _pad_id(model),
        encoder_check.THRESHOLDS["fp32"],
    )
    encoder_check.write(out, result)
    log.info("onnx export checked", extra={"model_path": str(source), **result})


def export_dynamo(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    shapes: Any,
    model: Any,
) -> None:
    """``torch.onnx.export`` with the dynamo exporter, quietly, as every hfd ONNX export runs it:
    the opset, and one self-contained file unless protobuf's 2 GB limit forces weights beside it."""
    import torch

    with torch.no_grad(), warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_shapes=shapes, opset_version=ONNX_OPSET, dynamo=True, verbose=False,
                          external_data=_parameter_bytes(model) > _PROTOBUF_LIMIT)  # fmt: skip


_PROTOBUF_LIMIT = 1_800_000_000  # a little under 2 GiB: the graph's own bytes come on top


def _parameter_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _pad_id(model: Any) -> int | None:
    pad = getattr(model.config, "pad_token_id", None)
    return int(pad) if isinstance(pad, int) else None


def session_options(device: str, threads: int) -> Any:
    """A serving session's options, one rule for every ONNX Runtime graph hfd runs: all graph
    optimizations, ``threads`` intra-op threads (0: ONNX Runtime's own count), one graph at a time
    on the model's worker thread, and on the CPU threads that sleep instead of spinning
    (``hfd.backends.cpu_pools``)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if device_kind(device) == "cpu":
        for key, value in cpu_pools.SESSION_CONFIG.items():
            options.add_session_config_entry(key, value)
    return options


def check_session(graph: Path) -> Any:
    """A one-thread CPU session over a fresh export, for its check."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])


def _run_graph(graph: Path, ids: Any, mask: Any) -> Any:
    session = check_session(graph)
    names = {i.name for i in session.get_inputs()}
    feeds = {"input_ids": ids, "attention_mask": mask}
    return session.run(["last_hidden_state"], {k: v for k, v in feeds.items() if k in names})[0]


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints its progress to stdout and logs a warning per torchvision
    operator it cannot register; the daemon's output is its log, and torchvision is never
    installed with hfd."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield
    finally:
        exporter_log.setLevel(level)


def _Positional(model: Any) -> Any:
    import torch

    class Positional(torch.nn.Module):
        """Names the two positional export inputs for the model's forward; nothing else."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # type: ignore[no-any-return]

    return Positional(model)


# -- encoder ------------------------------------------------------------------------------------


class OnnxEncoder(GraphEncoder):
    """An ``EncoderModel`` over an ``onnxruntime.InferenceSession`` that outputs token embeddings."""

    name = "onnxruntime"

    def __init__(
        self, graph: Path, head: EncoderHead, device: str, providers: list[Any], threads: int
    ) -> None:
        import onnxruntime as ort

        super().__init__(head, device)
        self._graph = graph
        options = session_options(device, threads)
        try:
            self._session = ort.InferenceSession(str(graph), sess_options=options, providers=providers)
        except Exception as exc:
            raise ModelUnavailable(f"onnxruntime cannot load {graph}: {exc}") from exc
        self.providers: list[str] = list(self._session.get_providers())
        inputs = [i.name for i in self._session.get_inputs()]
        self._ports(graph, inputs, [o.name for o in self._session.get_outputs()])

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        if not batch.ids:
            return self._head.empty()
        ids, mask = self._head.pad(batch)
        (hidden,) = self._session.run([self._output], encoder_feeds(self._inputs, ids, mask))
        return pool(np.asarray(hidden), mask, self._head.pooling)

    def memory_bytes(self) -> int:
        # The graph and its external-data files (model.onnx_data, model.onnx.data ...).
        return sum(f.stat().st_size for f in self._graph.parent.glob(f"{self._graph.name}*") if f.is_file())

    def close(self) -> None:
        self._session = None
