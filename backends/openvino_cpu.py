"""Threads and compute precision for OpenVINO on the CPU: the one place that decides both.

OpenVINO's CPU plugin computes in bf16 by default on CPUs with native bf16 (AVX-512-BF16 or
AMX-BF16; its ``OPTIMIZATION_CAPABILITIES`` then list ``BF16``), and in f32 elsewhere. On the
2-core Intel Xeon (AVX-512-BF16, AMX) development boxes, OpenVINO 2026.4 with bf16 compute dies
of SIGFPE at one thread: ``ContinuousBatchingPipeline`` on its first ``step()``, and
``compile_model`` of a model with FFN width 128. f32 at one thread runs, and bf16 at two threads
runs. So the rule, applied to every OpenVINO CPU load:

- bf16 compute never gets one thread. When threads are automatic, bf16 on a CPU with native bf16
  gets at least 2 threads (measured on that Intel box, 56M-parameter Llama served with 64 tokens
  per request: 2 threads bf16 gave 2366 tok/s at 32 clients and 262 at 1, where the 1-thread
  default crashed OpenVINO and torch served 298 and 57; AMX at two threads is worth far more than
  the core the automatic choice would leave free). When the operator asked for one thread, it
  is kept and compute switches to f32 (an explicit thread count is a resource decision; f32 at
  one thread is known to run). A model that asked for bf16 at one thread gets two threads when
  the box has two CPUs, else f32.
- On a box with one usable CPU, bf16 compute is never chosen: f32.
- The rule covers every CPU with native bf16, though the crash was seen only with AMX: on the
  2-core AMD EPYC Zen 5 (AVX-512-BF16, no AMX) bf16 at one thread ran (a pipeline step of the
  FFN-128 test Llama and of the 56M bench Llama, 3 of 3 tries), and offline at one thread bf16
  gave 1.55-1.66x f32 (bench Llama, fp32 weights, 1 and 32 streams). It is kept there as the
  conservative choice, so an explicit one thread costs that factor on this class; the notes say
  which basis applies (``one_thread_bf16_why``).
- Elsewhere (AVX2 CPUs, f32 or f16 asked) nothing changes: threads as the daemon chose them.

The precision is explicit either way: the plan sets ``INFERENCE_PRECISION_HINT`` whenever it
departs from OpenVINO's own default, and reports what the CPU will compute in.

Nothing here imports openvino.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# dtype names hfd accepts -> OpenVINO's INFERENCE_PRECISION_HINT values.
PRECISION_HINTS = {"float32": "f32", "fp32": "f32", "f32": "f32", "float16": "f16", "fp16": "f16",
                   "f16": "f16", "bfloat16": "bf16", "bf16": "bf16"}  # fmt: skip
# The fewest threads bf16 compute runs with on the CPUs that have it (see above).
BF16_MIN_THREADS = 2


@dataclass(frozen=True)
class CpuPlan:
    threads: int  # INFERENCE_NUM_THREADS to set (0: OpenVINO's own choice)
    precision: str  # what the CPU plugin will compute in: "f32", "bf16", "f16"
    hint: str | None  # INFERENCE_PRECISION_HINT to set, or None for OpenVINO's default
    note: str  # why, when the plan changed what was asked ("" otherwise)


def native_bf16(features: Iterable[str], capabilities: Iterable[str] = ()) -> bool:
    """Whether OpenVINO's CPU plugin computes in bf16 by default on this CPU."""
    flags = set(features)
    return bool(flags & {"avx512_bf16", "amx_bf16"}) or "BF16" in set(capabilities)


def capabilities(ov_cpu: Any) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of a probed CPU device (its ``capability``
    text); [] when OpenVINO lists no CPU (``None``)."""
    return (ov_cpu.capability or "").split(",") if ov_cpu is not None else []


def default_precision(features: Iterable[str], capabilities: Iterable[str] = ()) -> str:
    return "bf16" if native_bf16(features, capabilities) else "f32"


def precision_hint(dtype: str | None) -> str | None:
    """A model's ``dtype`` option as OpenVINO's precision hint; None when not given."""
    if dtype is None:
        return None
    hint = PRECISION_HINTS.get(dtype.strip().lower())
    if hint is None:
        raise ValueError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16")
    return hint


def auto_threads(auto: int, usable_cpus: int, features: Iterable[str], dtype: str | None = None) -> int:
    """The automatic thread count for OpenVINO on the CPU, given the daemon's general automatic
    choice ``auto``: at least ``BF16_MIN_THREADS`` where the CPU will compute in bf16."""
    hint = precision_hint(dtype) if dtype else None
    precision = hint or default_precision(features)
    if precision == "bf16" and usable_cpus >= BF16_MIN_THREADS:
        return max(auto, BF16_MIN_THREADS)
    return auto


def one_thread_bf16_why(features: Iterable[str]) -> str:
    """Why bf16 compute is kept off one thread, true for this CPU's class."""
    if "amx_bf16" in set(features):
        return "bf16 compute crashes OpenVINO 2026.4 at one thread on AMX CPUs"
    return "bf16 compute crashed OpenVINO 2026.4 at one thread with AMX; kept off one thread on every native-bf16 CPU"


def plan(
    threads: int,
    dtype: str | None,
    usable_cpus: int,
    features: Iterable[str],
    capabilities: Iterable[str] = (),
) -> CpuPlan:
    """Threads and precision for one OpenVINO CPU load. ``threads`` is what the daemon hands the
    engine (0: OpenVINO's own choice, which is one thread per core, so ``usable_cpus`` here)."""
    features = tuple(features)
    asked = precision_hint(dtype)
    default = default_precision(features, capabilities)
    precision = asked or default
    effective = threads if threads > 0 else max(1, usable_cpus)
    if precision != "bf16" or effective >= BF16_MIN_THREADS:
        return CpuPlan(threads, precision, asked, "")
    if asked == "bf16" and usable_cpus >= BF16_MIN_THREADS:
        note = f"{one_thread_bf16_why(features)}: {BF16_MIN_THREADS} threads"
        return CpuPlan(BF16_MIN_THREADS, "bf16", "bf16", note)
    why = "one thread was asked for" if threads == 1 and usable_cpus >= BF16_MIN_THREADS else "one CPU"
    note = f"{one_thread_bf16_why(features)} ({why}): f32 compute"
    return CpuPlan(threads, "f32", "f32", note)


def precision_name(value: object) -> str:
    """OpenVINO's precision property (an ``ov.Type`` or its text) as "f32" / "bf16" / "f16"."""
    name = getattr(value, "get_type_name", None)
    text = str(name() if callable(name) else value).strip().lower()
    text = text.removeprefix("<type: '").removesuffix("'>")
    return PRECISION_HINTS.get(text, text)


# -- activations quantized on the fly --------------------------------------------------------------

# Before a matmul with int8 or int4 weights, OpenVINO's CPU plugin quantizes the activations to
# int8 on the fly, one scale per DYNAMIC_QUANTIZATION_GROUP_SIZE values (its default in 2026.4:
# 32, as llama.cpp's q8_0 blocks). Measured on the 2-core AMD EPYC Zen 5 (AVX-512 VNNI and BF16,
# no AMX), int8 weights, bf16 compute, 2 threads, pipelines of each size loaded side by side and
# run in alternation (docs/engines.md, "Weight formats"): groups of 128 decode 1.16x (one stream)
# and 1.25x (8 streams) faster on a 496M-parameter Llama, 1.03x and 1.13x (32 streams) on the
# 56M bench Llama, for a relative logit error (against fp32 weights and compute) of 0.064 where
# 32 gives 0.059 and the int8 weights alone 0.051. 256 was no faster at one stream and costs more.
# With int4 weights (groups of 128 of their own) on the 496M model: 1.31x at one stream and 1.18x
# at 8 against 32, and no difference in logit error (the int4 weights' own dominates); 256, wider
# than the weights' groups, ran as with the quantization off (0.8x).
# The rule covers the CPUs of that class (AVX-512 VNNI, bf16 compute, no AMX: Zen 4 and 5, Intel's
# Cooper Lake); on AVX2 and AMX CPUs, not measured, OpenVINO's own default stays.
ACTIVATION_GROUP_OPTION = "dynamic_quantization_group_size"
MEASURED_ACTIVATION_GROUP = 128
MAX_ACTIVATION_GROUP = 1 << 16
_AMX = frozenset({"amx_tile", "amx_int8", "amx_bf16"})


def activation_group(
    asked: Any, weight_format: str, precision: str, features: Iterable[str], matrix_inputs: Iterable[int] = ()
) -> int | None:
    """``DYNAMIC_QUANTIZATION_GROUP_SIZE`` for one CPU generation load, or None for OpenVINO's
    default. ``asked``: the model option (None when not set; 0 turns the quantization off).
    ``matrix_inputs``: the input widths of the model's matrices (hidden and intermediate sizes);
    int4 weights get the group only when their own groups of 128 divide every one (a matrix
    that does not gets smaller weight groups, ``openvino_export``, and activation groups larger
    than its weight groups turned the quantization off: 0.8x, as 256 did for every matrix)."""
    if asked is not None:
        try:
            number = int(asked)
        except (TypeError, ValueError):
            number = -1
        if isinstance(asked, bool | float) or not 0 <= number <= MAX_ACTIVATION_GROUP:
            raise ValueError(
                f"the model option {ACTIVATION_GROUP_OPTION} must be an integer in [0, {MAX_ACTIVATION_GROUP}]"
                " (0: activations are not quantized)"
            )
        return number
    flags = set(features)
    if precision != "bf16" or "avx512_vnni" not in flags or flags & _AMX:
        return None
    widths = list(matrix_inputs)
    int4_fits = bool(widths) and all(w > 0 and w % MEASURED_ACTIVATION_GROUP == 0 for w in widths)
    if weight_format == "int8" or (weight_format == "int4" and int4_fits):
        return MEASURED_ACTIVATION_GROUP
    return None


def activation_group_note(features: Iterable[str], precision: str) -> str:
    """What ``hfd doctor`` says about the activation groups of int8 weights on this CPU."""
    if activation_group(None, "int8", precision, features) is None:
        return ""
    return (
        f"int8 and int4 weights: activations quantized in groups of {MEASURED_ACTIVATION_GROUP} (OpenVINO's "
        "default 32; measured on this CPU class: 1.13-1.34x batched; int4 where 128 divides the model's widths; "
        "option dynamic_quantization_group_size)"
    )
