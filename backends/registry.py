"""Engines by name: one record per engine, read by the policy, the hardware report, the model
manager and ``hfd doctor``.

Everything an engine's neighbours need to know about it without importing it lives in its
record: where its factory is (an import string, so ``import hfd`` never imports torch or
OpenVINO), which tasks it runs, how the hardware report probes it, whether a load runs in a
process of its own, which dtype it holds weights in (for the memory estimate and ``hfd ps``), and
which model options it reads (``hfd.backends.model_options``: a model with an option its engine
does not read is not loaded on it). Adding an engine is one record here plus its module; nothing
else lists engine names.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from hfd.backends import model_options as mo
from hfd.backends.base import Backend, LoadOptions, Task

if TYPE_CHECKING:
    from hfd.backends.hardware import EngineProbe, HardwareReport

# Set to 1 to let the policy choose the fake engine without a pin (tests of whole daemons, so
# that no request can reach a real engine by accident); see ``offered``.
FAKE_ENGINE_ENV: Final = "HFD_FAKE_ENGINE"


def _never(task: Task, opts: LoadOptions) -> bool:
    return False


def _openvino_own_process(task: Task, opts: LoadOptions) -> bool:
    # OpenVINO's ContinuousBatchingPipeline and VLMPipeline run in a process of their own (a crash
    # there, known on some CPUs, must not take the daemon down), unless the model's option says otherwise.
    return task in ("generate", "vision-chat") and opts.flag("pipeline_process", True)


def _no_dtype(opts: LoadOptions) -> str | None:
    return opts.dtype


def _torch_dtype(opts: LoadOptions) -> str | None:
    # The torch engine's defaults: fp32 on CPUs, fp16 on accelerators.
    if opts.dtype:
        return opts.dtype
    return "float32" if opts.device.lower() in ("cpu", "") else "float16"


def _openvino_dtype(opts: LoadOptions) -> str | None:
    return opts.dtype or opts.weight_format or "fp32"


def _f32_weights(report: HardwareReport) -> tuple[str, str]:
    return "f32", "fp32 weights, fp32 compute on the CPU"


def _f32_graph(report: HardwareReport) -> tuple[str, str]:
    return "f32", "the exported graph's fp32"


def _openvino_precision(report: HardwareReport) -> tuple[str, str]:
    from hfd.backends import openvino_cpu

    caps = openvino_cpu.capabilities(report.openvino.first("cpu"))
    precision = openvino_cpu.default_precision(report.cpu.features, caps)
    if precision == "bf16":
        why = (
            'the CPU has native bf16 (AVX-512-BF16/AMX): OpenVINO\'s default; dtype = "float32" gives '
            "transformers' fp32 results"
        )
        flags = set(report.cpu.features)
        if "avx512_bf16" in flags and "amx_bf16" not in flags:  # measured: docs/benchmarks.md
            why += "; on the 2-core AMD EPYC Zen 5 bf16 served 1.4-2.0x float32 at 1 stream, 0.9-1.65x at 32"
    else:
        why = "no native bf16 on this CPU"
    note = openvino_cpu.activation_group_note(report.cpu.features, precision)
    return precision, f"{why}; {note}" if note else why


@dataclass(frozen=True)
class EngineRecord:
    name: str
    factory: str  # "module:attribute" of a zero-argument factory returning a Backend
    tasks: frozenset[Task]
    probe: str  # "module:attribute" of a cached, never-raising () -> EngineProbe
    dist: str | None  # the distribution whose version identifies the engine (proving, failures)
    # Whether a load of ``task`` with these options runs the engine in a process of its own
    # (its memory then counts a process's overhead, and it can die on its own: ``alive``).
    own_process: Callable[[Task, LoadOptions], bool] = _never
    # The dtype the engine will hold the weights in (None: the snapshot's own).
    load_dtype: Callable[[LoadOptions], str | None] = _no_dtype
    # (precision, why) the engine computes in on this CPU when a model sets no dtype, for
    # ``hfd doctor``; None: not reported.
    cpu_precision: Callable[[HardwareReport], tuple[str, str]] | None = None
    # False: the policy never chooses this engine unless it is pinned (the fake engine).
    default_offer: bool = True
    # The model options (``[[models]] options``) the engine reads; any other makes it ineligible.
    options: tuple[mo.ModelOption, ...] = ()

    @property
    def offered(self) -> bool:
        """Whether the policy may choose this engine for a model that does not pin one."""
        return self.default_offer or os.environ.get(FAKE_ENGINE_ENV, "").strip() in ("1", "true", "yes")

    def run_probe(self) -> EngineProbe:
        probe: EngineProbe = resolve(self.probe)()
        return probe


def _engine(name: str, factory: str, probe: str, tasks: tuple[Task, ...], **extra: Any) -> EngineRecord:
    """A record whose factory and probe are ``"module:attribute"`` in ``hfd.backends``."""
    extra.setdefault("dist", name)  # the engine's distribution is named as the engine
    return EngineRecord(
        name=name,
        factory=f"hfd.backends.{factory}",
        tasks=frozenset(tasks),
        probe=f"hfd.backends.{probe}",
        **extra,
    )


RECORDS: Final[tuple[EngineRecord, ...]] = (
    _engine("torch", "torch_backend:TorchBackend", "torch_probe:probe_torch", ("generate", "embed"),
            load_dtype=_torch_dtype, cpu_precision=_f32_weights,
            options=(mo.DTYPE, mo.PREFIX_CACHING, mo.PREFIX_CACHE_BYTES)),
    _engine("openvino", "openvino_backend:OpenVINOBackend", "openvino_probe:probe_openvino", ("generate", "embed"),
            own_process=_openvino_own_process, load_dtype=_openvino_dtype, cpu_precision=_openvino_precision,
            options=(mo.DTYPE, mo.PREFIX_CACHING, mo.SPLIT_FUSE, mo.PIPELINE_PROCESS, mo.KV_CACHE_GB, mo.ACTIVATION_GROUP,
                     mo.SPECULATIVE, mo.LOOKUP_TOKENS, mo.LOOKUP_NGRAM, mo.DRAFT, mo.DRAFT_TOKENS,
                     mo.GGUF_FILE, mo.TEST_FAULT)),
    # Its graphs are exported and computed in fp32: a dtype asks for nothing else.
    _engine("onnxruntime", "onnx_backend:OnnxBackend", "onnx_probe:probe_onnxruntime", ("embed",),
            cpu_precision=_f32_graph, options=(mo.DTYPE.only("float32", "fp32"),)),
    _engine("fake", "fake_backend:FakeBackend", "fake_backend:probe", ("generate", "embed"),
            dist=None, default_offer=False, options=mo.FAKE),
)  # fmt: skip
ENGINES: Final[dict[str, EngineRecord]] = {r.name: r for r in RECORDS}


def names() -> list[str]:
    """Every registered engine, in the registry's order."""
    return [r.name for r in RECORDS]


def record(name: str) -> EngineRecord:
    """The record of engine ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None


def own_process(engine: str, task: Task, opts: LoadOptions) -> bool:
    """Whether loading ``task`` on ``engine`` starts a process of its own (False if unknown)."""
    r = ENGINES.get(engine)
    return r is not None and r.own_process(task, opts)


def load_dtype(engine: str, opts: LoadOptions) -> str | None:
    """The dtype ``engine`` will hold the weights in, for the memory estimate and ``hfd ps``."""
    r = ENGINES.get(engine)
    return r.load_dtype(opts) if r is not None else opts.dtype


def resolve(target: str) -> Any:
    """The object an import string ("module:attribute") names, importing its module."""
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@cache
def get_backend(name: str) -> Backend:
    backend: Backend = resolve(record(name).factory)()
    return backend
