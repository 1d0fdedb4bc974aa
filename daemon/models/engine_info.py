"""What ``hfd ps`` says about the engine serving a model: compute precision, weight format,
threads and KV cache.

Engines that know (OpenVINO reads what its plugin will compute in from the compiled model or the
device) expose ``precision``, ``weight_format``, ``threads``, ``kv_cache_bytes`` (planned) and
``allocated_kv_bytes()``; for the others the load options say: the torch engine computes in the
dtype it loads the weights in (fp32 on CPUs, fp16 on accelerators, unless ``dtype`` says).
"""

from __future__ import annotations

from typing import Any

from hfd.backends import registry
from hfd.backends.base import LoadOptions

_NAMES = {"float32": "f32", "fp32": "f32", "f32": "f32", "float16": "f16", "fp16": "f16", "f16": "f16",
          "half": "f16", "bfloat16": "bf16", "bf16": "bf16", "int8": "int8"}  # fmt: skip


def precision_name(value: object) -> str:
    text = str(value).strip().lower().removeprefix("torch.")
    return _NAMES.get(text, text)


def engine_details(model: Any, engine: str, opts: LoadOptions) -> dict[str, Any]:
    """The engine fields of one ``hfd ps`` row, fixed at load."""
    precision = getattr(model, "precision", None)
    if precision is None:
        # What the engine's registry record says it holds the weights in (torch: fp32 on CPUs,
        # fp16 on accelerators), unless the model says.
        precision = getattr(model, "dtype", None) or registry.load_dtype(engine, opts)
    weight_format = getattr(model, "weight_format", None)
    if weight_format is None and engine == "openvino":
        weight_format = opts.weight_format  # only OpenVINO reads the option; others hold their dtype
    if weight_format is None and precision is not None:
        weight_format = precision_name(precision)  # torch holds the weights in what it computes in
    threads = getattr(model, "threads", None)
    return {
        "precision": precision_name(precision) if precision is not None else None,
        "weight_format": str(weight_format) if weight_format is not None else None,
        "threads": int(threads) if isinstance(threads, int) and threads > 0 else opts.threads or None,
    }


def kv_cache(model: Any) -> dict[str, int] | None:
    """The KV cache of a generator that plans its own (OpenVINO's paged cache): the planned cap
    and what the engine has allocated so far; None for engines without one."""
    planned = getattr(model, "kv_cache_bytes", None)
    if not isinstance(planned, int):
        return None
    allocated = 0
    reader = getattr(model, "allocated_kv_bytes", None)
    if callable(reader):
        try:
            allocated = int(reader())
        except Exception:  # an engine that cannot tell must not break `hfd ps`
            allocated = 0
    return {"planned_bytes": planned, "allocated_bytes": allocated}
