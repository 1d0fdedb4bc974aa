"""Threads and precision for OpenVINO on the CPU, for the CPU classes the project runs on:
the 2-core AMD EPYC (AVX2 only), the 2-core Intel Xeon (AVX-512-BF16, AMX), where OpenVINO
computes in bf16 by default and crashes with bf16 at one thread, and the 2-core AMD EPYC Zen 5
(AVX-512-BF16, no AMX), bf16 by default too. The feature sets are built by hand, so every class
is checked on any machine."""

from __future__ import annotations

import pytest

from hfd.backends import openvino_cpu
from hfd.backends.hardware import CpuInfo, parse_cpuinfo
from hfd.daemon.models import threads
from hfd.daemon.settings import ModelSpec, load_settings

AMD_FLAGS = "fpu sse2 sse4_2 avx avx2 fma f16c"
INTEL_FLAGS = (
    AMD_FLAGS + " avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8"
)


def features(flags: str) -> tuple[str, ...]:
    _, _, found = parse_cpuinfo(f"vendor_id\t: x\nflags\t\t: {flags}\n")
    return tuple(sorted(found))


ZEN5_FLAGS = AMD_FLAGS + " avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_vbmi2 avx_vnni"

AMD = features(AMD_FLAGS)
INTEL = features(INTEL_FLAGS)
ZEN5 = features(ZEN5_FLAGS)


def cpu(feats: tuple[str, ...], usable: int) -> CpuInfo:
    return CpuInfo("v", "m", "x86_64", usable, usable, usable, feats)


def test_only_native_bf16_cpus_compute_in_bf16_by_default() -> None:
    assert openvino_cpu.default_precision(AMD) == "f32"
    assert openvino_cpu.default_precision(INTEL) == "bf16"
    assert openvino_cpu.default_precision(features(AMD_FLAGS + " avx512_bf16")) == "bf16"
    assert openvino_cpu.default_precision(AMD, ["FP32", "BF16"]) == "bf16"  # OpenVINO's own view


@pytest.mark.parametrize("threads_asked", [0, 1, 2, 4])
@pytest.mark.parametrize("dtype", [None, "float32", "bfloat16", "float16"])
@pytest.mark.parametrize("usable", [1, 2, 8])
@pytest.mark.parametrize("feats", [AMD, INTEL], ids=["amd-avx2", "intel-amx"])
def test_bf16_never_runs_at_one_thread(
    feats: tuple[str, ...], usable: int, dtype: str | None, threads_asked: int
) -> None:
    plan = openvino_cpu.plan(threads_asked, dtype, usable, feats)
    effective = plan.threads if plan.threads > 0 else usable
    assert not (plan.precision == "bf16" and effective < 2)
    # The precision is what was asked, when that is safe.
    if dtype in ("float32", "float16"):
        assert plan.precision == openvino_cpu.precision_hint(dtype)
    # A hint is set whenever the plan departs from OpenVINO's default.
    if plan.precision != openvino_cpu.default_precision(feats):
        assert plan.hint == plan.precision


def test_amd_plan_is_what_was_asked() -> None:
    assert openvino_cpu.plan(1, None, 2, AMD) == openvino_cpu.CpuPlan(1, "f32", None, "")
    assert openvino_cpu.plan(2, "float32", 2, AMD) == openvino_cpu.CpuPlan(2, "f32", "f32", "")


def test_intel_one_thread_asked_keeps_the_thread_and_computes_in_f32() -> None:
    plan = openvino_cpu.plan(1, None, 2, INTEL)
    assert (plan.threads, plan.precision, plan.hint) == (1, "f32", "f32")
    assert "one thread was asked for" in plan.note


def test_intel_bf16_asked_at_one_thread_gets_two_threads() -> None:
    plan = openvino_cpu.plan(1, "bfloat16", 2, INTEL)
    assert (plan.threads, plan.precision, plan.hint) == (2, "bf16", "bf16")


def test_intel_one_cpu_box_computes_in_f32() -> None:
    for asked in (0, 1):
        plan = openvino_cpu.plan(asked, None, 1, INTEL)
        assert (plan.precision, plan.hint) == ("f32", "f32")
        assert "one CPU" in plan.note
    assert openvino_cpu.plan(1, "bfloat16", 1, INTEL).precision == "f32"


def test_intel_two_threads_stay_bf16() -> None:
    assert openvino_cpu.plan(2, None, 2, INTEL) == openvino_cpu.CpuPlan(2, "bf16", None, "")
    assert openvino_cpu.plan(0, None, 2, INTEL) == openvino_cpu.CpuPlan(0, "bf16", None, "")


@pytest.mark.parametrize("usable", [1, 2, 8])
def test_automatic_threads_for_openvino_by_cpu_class(usable: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: usable)
    settings = load_settings(cli={"threads": 0}, environ={})
    spec = ModelSpec(ref="x")
    f32 = ModelSpec(ref="x", options={"dtype": "float32"})
    bf16 = ModelSpec(ref="x", options={"dtype": "bfloat16"})
    # Both classes: every core (2 threads served 1.4-1.5x one on the AMD box, 8x on the AMX one),
    # whatever the precision; so bf16 never gets one thread where the box has two CPUs.
    for feats in (AMD, INTEL):
        for model in (spec, f32, bf16):
            choice = threads.thread_choice(settings, model, "openvino", cpu=cpu(feats, usable))
            assert choice.threads == usable
            assert choice.why.startswith(f"all {usable} usable physical core")
    # An affinity mask narrower than the CPU report: the bf16 floor still holds on AMX.
    monkeypatch.setattr(threads, "available_cores", lambda: 1)
    floor = threads.thread_choice(settings, spec, "openvino", cpu=cpu(INTEL, 2))
    assert floor.threads == 2 and "bf16" in floor.why
    assert threads.engine_threads(settings, f32, "openvino", "cpu", cpu(INTEL, 2)) == 1
    assert threads.engine_threads(settings, spec, "openvino", "cpu", cpu(AMD, 2)) == 1
    # Other engines and devices, and explicit counts, are not touched by the floor.
    assert threads.engine_threads(settings, spec, "torch", "cpu", cpu(INTEL, 2)) == 1
    assert threads.engine_threads(settings, spec, "openvino", "GPU.0", cpu(INTEL, 2)) == 1
    assert (
        threads.engine_threads(settings, ModelSpec(ref="x", threads=1), "openvino", "cpu", cpu(INTEL, 2)) == 1
    )


def test_the_one_thread_bf16_reason_names_the_basis_of_its_class() -> None:
    # The crash was seen with AMX; on AVX-512-BF16 without AMX the rule is kept as a precaution,
    # and the note must not claim a crash on that CPU.
    zen5 = openvino_cpu.plan(1, None, 2, ZEN5)
    assert (zen5.threads, zen5.precision, zen5.hint) == (1, "f32", "f32")
    assert "with AMX" in zen5.note and "crashes" not in zen5.note
    assert "one thread was asked for" in zen5.note
    intel = openvino_cpu.plan(1, None, 2, INTEL)
    assert "crashes OpenVINO 2026.4 at one thread on AMX CPUs" in intel.note
    assert openvino_cpu.plan(1, "bfloat16", 2, ZEN5).threads == 2
    assert openvino_cpu.plan(2, None, 2, ZEN5) == openvino_cpu.CpuPlan(2, "bf16", None, "")


def test_precision_names() -> None:
    class FakeType:
        def get_type_name(self) -> str:
            return "bf16"

    assert openvino_cpu.precision_name(FakeType()) == "bf16"
    assert openvino_cpu.precision_name("<Type: 'float32'>") == "f32"
    assert openvino_cpu.precision_name("f16") == "f16"
    with pytest.raises(ValueError):
        openvino_cpu.precision_hint("int4")


@pytest.mark.parametrize(
    ("feats", "threads_asked", "expected"),
    [
        (AMD, 1, {"INFERENCE_NUM_THREADS": 1}),
        (
            INTEL,
            1,
            {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"},
        ),
        (INTEL, 2, {"INFERENCE_NUM_THREADS": 2}),
    ],
    ids=["amd-1", "intel-1", "intel-2"],
)
def test_the_engine_compiles_with_the_plan(
    monkeypatch: pytest.MonkeyPatch, feats: tuple[str, ...], threads_asked: int, expected: dict[str, object]
) -> None:
    from pathlib import Path

    from hfd.backends import hardware, openvino_backend
    from hfd.backends.base import LoadOptions

    monkeypatch.setattr(hardware, "probe_cpu", lambda: cpu(feats, 2))
    monkeypatch.setattr(
        hardware, "probe_openvino", lambda: hardware.EngineProbe(name="openvino", installed=True)
    )
    opts = LoadOptions(path=Path("."), task="generate", threads=threads_asked)
    assert openvino_backend._compile_properties(opts, "CPU") == expected
    # Not the CPU: only what was asked.
    assert openvino_backend._compile_properties(opts, "GPU.0") == {}


@pytest.mark.parametrize(
    ("feats", "precision"),
    [(AMD, "f32"), (INTEL, "bf16"), (ZEN5, "bf16")],
    ids=["amd-avx2", "intel-amx", "amd-zen5"],
)
def test_doctor_shows_the_default_precision_per_engine(feats: tuple[str, ...], precision: str) -> None:
    from hfd.backends.hardware import EngineProbe, HardwareReport, MemoryInfo, engine_defaults

    installed = {
        name: EngineProbe(name=name, installed=True) for name in ("torch", "openvino", "onnxruntime")
    }
    report = HardwareReport(
        system="Linux", python="3.11", cpu=cpu(feats, 2), memory=MemoryInfo(1 << 34, 1 << 33), **installed
    )
    defaults = engine_defaults(report)
    assert defaults["openvino"]["precision"] == precision
    assert defaults["torch"]["precision"] == defaults["onnxruntime"]["precision"] == "f32"
    if precision == "bf16":
        assert "float32" in defaults["openvino"]["why"]  # how to get transformers' results
    # The measured gain is cited only on the class it was measured on.
    assert ("Zen 5" in defaults["openvino"]["why"]) == (feats == ZEN5)


def test_activations_are_quantized_in_groups_of_128_only_where_that_was_measured() -> None:
    group = openvino_cpu.activation_group
    assert group(None, "int8", "bf16", ZEN5) == openvino_cpu.MEASURED_ACTIVATION_GROUP == 128
    # Elsewhere OpenVINO's own default stays: other CPU classes, other weights, f32 compute.
    assert group(None, "int8", "bf16", INTEL) is None  # AMX: not measured
    assert group(None, "int8", "f32", AMD) is None
    assert group(None, "int8", "f32", ZEN5) is None
    assert group(None, "int4", "bf16", ZEN5) is None  # widths unknown
    # int4: only where the weights' own groups of 128 divide every matrix's input width.
    assert group(None, "int4", "bf16", ZEN5, (1536, 1536, 4096)) == 128
    assert group(None, "int4", "bf16", ZEN5, (576, 576, 1536)) is None  # SmolLM2-135M-like: 576 = 4.5 x 128
    assert group(None, "int4", "bf16", INTEL, (1536, 1536, 4096)) is None
    assert group(None, "fp32", "bf16", ZEN5) is None


@pytest.mark.parametrize("asked", [0, 64, "256", 1 << 16])
def test_an_asked_activation_group_is_kept_on_every_cpu(asked: object) -> None:
    for feats in (AMD, INTEL, ZEN5):
        assert openvino_cpu.activation_group(asked, "int4", "f32", feats) == int(asked)  # type: ignore[call-overload]


@pytest.mark.parametrize("asked", [-1, (1 << 16) + 1, "many", True, 128.9, 1.5j])
def test_a_bad_activation_group_names_the_option(asked: object) -> None:
    with pytest.raises(ValueError, match="dynamic_quantization_group_size must be an integer in"):
        openvino_cpu.activation_group(asked, "int8", "bf16", ZEN5)


def test_doctor_names_the_activation_group_only_where_it_is_set() -> None:
    assert "groups of 128" in openvino_cpu.activation_group_note(ZEN5, "bf16")
    assert openvino_cpu.activation_group_note(INTEL, "bf16") == ""
    assert openvino_cpu.activation_group_note(AMD, "f32") == ""
