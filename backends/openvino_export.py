"""The OpenVINO engine's model files: a Hugging Face snapshot exported to OpenVINO IR.

A snapshot is exported once with optimum-intel (into the export cache, keyed by the snapshot and
the options) and every later load reads the IR. A directory that already holds
``openvino_model.xml`` is used as it is. An encoder export is checked against its model when it
is made (``encoder_check``); a failed check is cached too, and keeps the export from being used.

Weight formats (``LoadOptions.weight_format``): ``fp32``, ``fp16`` (IR stored in half precision;
the CPU plugin still computes in fp32 unless told otherwise) and ``int8`` (weight-only
compression with NNCF, per output channel, asymmetric) and, for generators only, ``int4``
(NNCF's 4-bit weight compression: ``INT4_ASYM``, groups of ``INT4_GROUP_SIZE`` = 128 input
channels sharing a scale and zero point, ``INT4_RATIO`` = 1.0 so every eligible matrix is 4-bit;
NNCF keeps the embedding and the output projection in int8, and a matrix whose width 128 does not
divide gets the largest group size that does). Defaults: ``fp32`` for encoders on the CPU and for generators under a
billion parameters on the CPU; ``int8`` for generators of a billion parameters or more (decoding
is memory-bound: int8 weights halve the bytes read per token, as optimum-intel itself does by
default); ``fp16`` on GPU and NPU.

Nothing here imports openvino, optimum or nncf at module import time.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from hfd.backends import _hf, encoder_check, families, gguf, preload
from hfd.backends.base import LoadOptions, Task
from hfd.backends.exports import ExportCache, dist_version, export_key
from hfd.client.errors import HfdError, InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)

WEIGHT_FORMATS = ("fp32", "fp16", "int8", "int4")
INT4_GROUP_SIZE = 128
INT4_RATIO = 1.0
# Bump when the way we export changes, so old exports are not reused.
EXPORT_REVISION = 1
IR_FILE = "openvino_model.xml"
# A vision chat export has no single model file: its language model marks a ready IR.
VLM_IR_FILE = "openvino_language_model.xml"
_BILLION = 1_000_000_000
_EXPORT_TASKS: dict[str, str] = {
    "generate": "text-generation-with-past",
    "embed": "feature-extraction",
    # Classification heads (hfd.backends.openvino_heads): the logits graph.
    "rerank": "text-classification",
    "classify": "text-classification",
    "token-classify": "token-classification",
    # Vision chat (hfd.backends.vlm_openvino): the language model, text and vision embeddings.
    "vision-chat": "image-text-to-text",
}
# Tasks that decode tokens: int4 weights, int8 by default from a billion parameters.
_GENERATORS = ("generate", "vision-chat")
# What a vision chat export needs beside its IR; optimum-intel saves them through the model's
# processor class, which cannot be built without torchvision.
_PROCESSOR_FILES = (
    "preprocessor_config.json",
    "processor_config.json",
    "chat_template.json",
    "chat_template.jinja",
)


def resolve_weight_format(opts: LoadOptions, device: str) -> str:
    if opts.task == "generate" and gguf.serves_gguf(opts.path, opts.extra.get("gguf_file")):
        return gguf.weight_format(opts.weight_format)
    if opts.weight_format is not None:
        wf = opts.weight_format.lower()
        if wf not in WEIGHT_FORMATS:
            raise InvalidRequest(
                f"unknown weight format {opts.weight_format!r}; use one of {', '.join(WEIGHT_FORMATS)}",
                param="weight_format",
            )
        if wf == "int4" and opts.task not in _GENERATORS:
            raise InvalidRequest(
                f"weight format int4 is for generation models only, not {opts.task!r}; use fp32, fp16 or int8",
                param="weight_format",
            )
        return wf
    if ready_ir(opts.path, opts.task):
        return "fp32"  # a ready IR is used as it is, whatever its weights are
    if not device.startswith("CPU"):
        return "int8" if opts.task in _GENERATORS and _parameter_count(opts.path) >= _BILLION else "fp16"
    if opts.task in _GENERATORS and _parameter_count(opts.path) >= _BILLION:
        return "int8"
    return "fp32"


def ready_ir(path: Path, task: Task) -> bool:
    """Whether ``path`` holds an exported IR for ``task`` already (used as it is)."""
    return (path / IR_FILE).is_file() or (task == "vision-chat" and (path / VLM_IR_FILE).is_file())


def ir_bytes(model_dir: Path) -> int:
    """The size of the IR's weights in ``model_dir``."""
    return sum(f.stat().st_size for f in model_dir.glob("openvino_*model*.bin"))


def _parameter_count(path: Path) -> int:
    """Parameters of a snapshot, from its safetensors headers (no weights are read)."""
    import json
    import struct

    total = 0
    for file in _hf.safetensors_weights(path):
        try:
            with file.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, ValueError, struct.error):
            continue
        for name, entry in header.items():
            if name != "__metadata__" and isinstance(entry, dict):
                count = 1
                for dim in entry.get("shape", []):
                    count *= int(dim)
                total += count
    return total


# -- export -------------------------------------------------------------------------------------


def export_options(task: Task, weight_format: str) -> dict[str, Any]:
    return {
        "format": "openvino-ir",
        "task": _EXPORT_TASKS[task],
        "weight_format": weight_format,
        "optimum_intel": dist_version("optimum-intel"),
        "nncf": dist_version("nncf") if weight_format in ("int8", "int4") else None,
        "revision": EXPORT_REVISION,
    }


def prepare_ir(opts: LoadOptions, task: Task, weight_format: str) -> tuple[Path, bool]:
    """The directory of the model's OpenVINO IR, exported into the cache on first use.
    Returns (directory, whether this call exported it)."""
    wanted = opts.extra.get("gguf_file")
    if task == "generate" and gguf.serves_gguf(opts.path, wanted):  # GenAI reads the GGUF file itself
        return gguf.choose(opts.path, wanted), False  # config.json or not
    config = _hf.require_model_dir(opts.path)
    if ready_ir(opts.path, task):
        return opts.path, False
    families.check("openvino", task, opts.path, config)  # a family the exporter refuses: before exporting
    _hf.check_weights(opts.path, allow_pickle=bool(opts.extra.get("allow_pickle")))
    if opts.cache_dir is None:
        raise ModelUnavailable("the openvino engine needs a cache directory for its exports")
    options = export_options(task, weight_format)
    key = export_key(
        opts.path,
        engine="openvino",
        engine_version=dist_version("openvino"),
        options=options,
        # An encoder graph depends on its config and weights only (encoder_check.weights_identity).
        commit=opts.extra.get("commit")
        or (encoder_check.weights_identity(opts.path) if task == "embed" else None),
    )
    meta = {
        "engine": "openvino",
        "task": task,
        "weight_format": weight_format,
        "source": str(opts.path),
        "model_type": config.get("model_type"),
        "options": options,
    }
    cache = ExportCache(opts.cache_dir)

    def build(out: Path) -> None:
        export_ir(opts.path, out, task, weight_format, opts.trust_remote_code)
        if task == "embed":  # checked against the model here; a failed check is cached too
            encoder_check.check_openvino(opts.path, out, IR_FILE, weight_format, trust_remote_code=opts.trust_remote_code,
                                         allow_pickle=bool(opts.extra.get("allow_pickle")))  # fmt: skip

    result = cache.get_or_build(key, build, meta)
    if task == "embed":
        encoder_check.require_checked(result.path, "openvino", opts.path)
    return result.path, result.built


def export_ir(source: Path, out: Path, task: Task, weight_format: str, trust_remote_code: bool) -> None:
    """Export a Hugging Face snapshot to OpenVINO IR in ``out`` (optimum-intel), then compress
    the weights when asked."""
    preload.wait_for_transformers()  # optimum imports it
    try:
        from optimum.exporters.openvino import main_export
        from optimum.intel import OVConfig
    except Exception as exc:
        raise ModelUnavailable(
            f"exporting to OpenVINO needs optimum-intel (install hfd[openvino]): {exc}"
        ) from exc
    log.info(
        "openvino export", extra={"model_path": str(source), "task": task, "weight_format": weight_format}
    )
    try:
        with warnings.catch_warnings():
            # Tracer and deprecation notes from torch/transformers during the export are noise
            # in the daemon's log; a failed export still raises.
            warnings.simplefilter("ignore")
            main_export(
                str(source),
                output=out,
                task=_EXPORT_TASKS[task],
                # Pool in hfd, not in the graph: the same IR then serves every pooling config.
                library_name="transformers",
                ov_config=OVConfig(dtype="fp16" if weight_format == "fp16" else "fp32"),
                # GenAI reads openvino_tokenizer.xml when present; hfd feeds token ids, so a
                # tokenizer that does not convert is no reason to fail.
                convert_tokenizer=task in _GENERATORS,
                trust_remote_code=trust_remote_code,
                local_files_only=True,
            )
    except HfdError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"OpenVINO export of {source} failed: {exc}") from exc
    if task == "vision-chat":  # GenAI reads the image processor's settings from the export's folder
        for name in _PROCESSOR_FILES:
            if (source / name).is_file() and not (out / name).exists():
                shutil.copyfile(source / name, out / name)
    if weight_format in ("int8", "int4"):
        _compress(out, weight_format)


def compression_options(weight_format: str) -> dict[str, Any]:
    """``nncf.compress_weights`` arguments for a weight format ("int8" or "int4")."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedCompressionParameters

    if weight_format == "int4":
        return {
            "mode": nncf.CompressWeightsMode.INT4_ASYM,
            "group_size": INT4_GROUP_SIZE,
            "ratio": INT4_RATIO,
            "advanced_parameters": AdvancedCompressionParameters(
                group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST
            ),
        }
    return {"mode": nncf.CompressWeightsMode.INT8_ASYM}


def _compress(out: Path, weight_format: str) -> None:
    compress_ir(out, compression_options(weight_format), weight_format)


def compress_ir(out: Path, options: dict[str, Any], tag: str) -> None:
    """Weight-only compression of every IR in ``out`` with NNCF (``options``: the arguments of
    ``nncf.compress_weights``), in place; ``tag`` names the temporary files."""
    import nncf
    import openvino as ov

    core = ov.Core()
    for xml in sorted(out.glob("openvino_*model*.xml")):
        model = core.read_model(xml)
        compressed = nncf.compress_weights(model, **options)
        tmp = xml.with_name(f".{xml.stem}.{tag}.xml")
        ov.save_model(compressed, tmp, compress_to_fp16=False)
        os.replace(tmp, xml)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
