"""The OpenVINO engine: continuously batched generation through OpenVINO GenAI's
``ContinuousBatchingPipeline`` and embeddings through a compiled OpenVINO model.

The snapshot's OpenVINO IR (exported once, weight formats) comes from ``openvino_export``; the
models are ``openvino_encoder.OVEncoder`` and ``openvino_generator.OVGenerator``; here, the
engine's record-facing class, the device and the compile properties. Tokenization stays with the
snapshot's Hugging Face tokenizer, so prompt ids are exactly the ones the torch engine would use.

Nothing here imports openvino at module import time.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from hfd.backends import _hf, gguf, hardware, load_progress, openvino_cpu
from hfd.backends.base import LoadOptions, Task
from hfd.backends.numpy_encoder import load_head
from hfd.backends.openvino_encoder import OVEncoder
from hfd.backends.openvino_export import IR_FILE, prepare_ir, resolve_weight_format
from hfd.backends.openvino_generator import OVGenerator
from hfd.backends.proving import probe_compile
from hfd.client.errors import InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    from hfd.backends.graph_heads import GraphHead

log = logging.getLogger(__name__)


class OpenVINOBackend:
    name = "openvino"
    tasks: frozenset[Task] = frozenset({"generate", "embed"})

    def available(self) -> tuple[bool, str]:
        probe = hardware.probe_openvino()
        return probe.installed, probe.reason

    def devices(self) -> list[str]:
        return [d.id for d in hardware.probe_openvino().devices]

    def load_encoder(self, opts: LoadOptions) -> OVEncoder | GraphHead:
        if opts.task != "embed":  # a classification head (rerank, classify, token-classify)
            from hfd.backends import openvino_heads

            return openvino_heads.load(opts)
        device = ov_device(opts.device)
        weight_format = resolve_weight_format(opts, device)
        start = time.perf_counter()
        model_dir, built = prepare_ir(opts, "embed", weight_format)
        head = load_head(opts.path, trust_remote_code=opts.trust_remote_code, cache_dir=opts.cache_dir)
        properties = _compile_properties(opts, device)
        load_progress.report("compiling")
        # The first compile of this graph with these properties on this CPU happens in a child
        # process: a native crash there fails this load instead of killing the daemon.
        probe_compile(
            model_dir / IR_FILE, device, properties, opts.cache_dir,
            static_length=head.max_length if device.startswith("NPU") else None, fault=_test_fault(opts),
        )  # fmt: skip
        encoder = OVEncoder(model_dir / IR_FILE, head, device, properties)
        encoder.weight_format = weight_format
        encoder.threads = int(properties.get("INFERENCE_NUM_THREADS", 0))
        log.info(
            "encoder loaded",
            extra={"engine": self.name, "model_path": str(opts.path), "device": device,
                   "weight_format": weight_format, "precision": encoder.precision, "threads": encoder.threads,
                   "exported": built, "seconds": round(time.perf_counter() - start, 3)},
        )  # fmt: skip
        return encoder

    def load_image_text(self, opts: LoadOptions) -> Any:
        from hfd.backends import clip_graph  # CLIP, SigLIP: the text and vision towers

        return clip_graph.load(opts, self.name)

    def load_speech(self, opts: LoadOptions) -> Any:
        from hfd.backends import whisper_openvino  # Whisper on GenAI's WhisperPipeline

        return whisper_openvino.load(opts)

    def load_vision_chat(self, opts: LoadOptions) -> Any:
        from hfd.backends import vlm_openvino  # LLaVA, Qwen2-VL, ...: GenAI's VLMPipeline

        return vlm_openvino.load(opts)

    def load_generator(self, opts: LoadOptions) -> OVGenerator:
        device = ov_device(opts.device)
        if device.startswith("NPU"):
            raise ModelUnavailable("OpenVINO continuous batching does not run on the NPU; use CPU or GPU")
        weight_format = resolve_weight_format(opts, device)
        start = time.perf_counter()
        properties = _compile_properties(opts, device)  # a bad option is refused before any export
        if weight_format == gguf.WEIGHT_FORMAT:
            properties = gguf.properties(device, properties, _cpu_precision(properties))
        properties = _activation_group(opts, properties, weight_format, device)
        model_dir, built = prepare_ir(opts, "generate", weight_format)  # a GGUF snapshot: its .gguf file
        generator = OVGenerator(model_dir, opts, device, properties, fault=_test_fault(opts))
        generator.weight_format = weight_format
        generator.threads = int(properties.get("INFERENCE_NUM_THREADS", 0))
        group = properties.get("DYNAMIC_QUANTIZATION_GROUP_SIZE")  # GGUF's "0" is text
        generator.activation_group = None if group is None else int(group)
        log.info(
            "generator loaded",
            extra={"engine": self.name, "model_path": str(opts.path), "device": device,
                   "weight_format": weight_format, "precision": generator.precision,
                   "threads": generator.threads, "exported": built,
                   "activation_group": generator.activation_group,
                   "kv_cache_bytes": generator.kv_cache_bytes, "context_length": generator.context_length,
                   "seconds": round(time.perf_counter() - start, 3)},
        )  # fmt: skip
        return generator


# -- options ------------------------------------------------------------------------------------


def ov_device(device: str) -> str:
    """hfd's device string to OpenVINO's ("cpu" -> "CPU", "gpu.1" -> "GPU.1"), checked against
    the devices OpenVINO sees here."""
    name = device.strip().upper() or "CPU"
    base = name.split(".")[0].split(":")[0]
    if base not in ("CPU", "GPU", "NPU", "AUTO", "HETERO", "MULTI"):
        raise InvalidRequest(f"the openvino engine does not run on {device!r}", param="device")
    probe = hardware.probe_openvino()
    if not probe.installed:
        raise ModelUnavailable(f"the openvino engine is not available: {probe.reason}")
    # Virtual devices pick among the real ones themselves; a bad index fails at compile time.
    if base in ("AUTO", "HETERO", "MULTI") or any(d.id.split(".")[0] == base for d in probe.devices):
        return name
    why = probe.unavailable.get(hardware.ov_device_kind(name), "not detected")
    raise ModelUnavailable(f"OpenVINO device {name} is not available: {why}", details={"device": name})


def _compile_properties(opts: LoadOptions, device: str) -> dict[str, Any]:
    """Compile properties: threads and precision hint. On the CPU both come from one rule
    (``openvino_cpu.plan``): bf16 compute never runs at one thread, where OpenVINO crashes."""
    try:
        hint = openvino_cpu.precision_hint(opts.dtype)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="dtype") from None
    props: dict[str, Any] = {}
    if device.startswith("CPU"):
        cpu = hardware.probe_cpu()
        cpu_plan = openvino_cpu.plan(
            opts.threads, opts.dtype, cpu.usable_cores, cpu.features, _ov_cpu_capabilities()
        )
        if cpu_plan.note:
            log.warning(
                "openvino cpu plan changed", extra={"model_path": str(opts.path), "note": cpu_plan.note,
                                                    "threads": cpu_plan.threads, "precision": cpu_plan.precision},
            )  # fmt: skip
        if cpu_plan.threads > 0:
            props["INFERENCE_NUM_THREADS"] = int(cpu_plan.threads)
        hint = cpu_plan.hint
    if hint is not None:
        props["INFERENCE_PRECISION_HINT"] = hint
    return props


def check_generator_options(opts: LoadOptions) -> None:
    """The generation load's own option checks, made before its export (the model manager
    exports before it loads): a bad option is refused without building anything."""
    device = ov_device(opts.device)
    _activation_group(opts, _compile_properties(opts, device), resolve_weight_format(opts, device), device)


def _activation_group(
    opts: LoadOptions, properties: dict[str, Any], weight_format: str, device: str = "CPU"
) -> dict[str, Any]:
    """The compile properties with the group size activations are quantized in before each
    compressed-weight matmul, where the model asks (also over a GGUF pipeline's "off") or
    ``openvino_cpu.activation_group``'s measured rule applies. A CPU property: asked for
    another device, the load is refused rather than the option ignored."""
    name = openvino_cpu.ACTIVATION_GROUP_OPTION
    asked = opts.extra.get(name)
    if not device.startswith("CPU"):
        if asked is not None:
            raise InvalidRequest(
                f"the model option {name} applies to the CPU only; this model loads on {device}",
                param=f"options.{name}",
            )
        return properties
    widths = _matrix_inputs(opts) if weight_format == "int4" and asked is None else ()
    try:
        group = openvino_cpu.activation_group(
            asked,
            weight_format,
            _cpu_precision(properties),
            hardware.probe_cpu().features,
            widths,
        )
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=f"options.{name}") from None
    return properties if group is None else {**properties, "DYNAMIC_QUANTIZATION_GROUP_SIZE": group}


def _matrix_inputs(opts: LoadOptions) -> tuple[int, ...]:
    """The input widths of a decoder's matrices from its config (hidden size, the attention
    output's, the feed-forward's); () when the config does not say."""
    try:
        config = _hf.require_model_dir(opts.path)
    except Exception:  # not a model directory: the export says so
        return ()
    text = config.get("text_config") or config
    hidden = int(text.get("hidden_size") or 0)
    inter = int(text.get("intermediate_size") or 0)
    heads = int(text.get("num_attention_heads") or 0)
    attention = int(text.get("head_dim") or 0) * heads or hidden
    return (hidden, attention, inter) if hidden and inter else ()


def _ov_cpu_capabilities() -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU ([] when it lists no CPU)."""
    return openvino_cpu.capabilities(hardware.probe_openvino().first("cpu"))


def _cpu_precision(properties: dict[str, Any]) -> str:
    """What the CPU computes in with these compile properties: the hint, else the plugin's default."""
    hint = properties.get("INFERENCE_PRECISION_HINT")
    if hint:
        return openvino_cpu.precision_name(hint)
    return openvino_cpu.default_precision(hardware.probe_cpu().features, _ov_cpu_capabilities())


def _test_fault(opts: LoadOptions) -> str | None:
    """A fault to inject, for tests only: the model option ``test_fault`` ("warmup" kills the
    engine process during its warm-up, "probe" the encoder's compile probe), honoured only when
    the environment variable ``HFD_TEST_FAULTS=1`` is set too, so no model config can trigger
    it in a real daemon."""
    if os.environ.get("HFD_TEST_FAULTS") != "1":
        return None
    fault = opts.extra.get("test_fault")
    return str(fault) if fault else None
