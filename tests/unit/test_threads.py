"""The engine thread budget: explicit settings win; automatic gives OpenVINO and ONNX Runtime
every core and torch all but one, never oversubscribes what this process may use, and says why."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hfd.daemon.models import threads
from hfd.daemon.settings import ModelSpec, Settings, load_settings


def settings(threads_setting: int = 0) -> Settings:
    return load_settings(cli={"threads": threads_setting}, environ={})


def test_a_models_threads_win_then_the_daemons() -> None:
    spec = ModelSpec(ref="x", threads=3)
    assert threads.engine_threads(settings(5), spec) == 3
    assert threads.engine_threads(settings(5), ModelSpec(ref="x")) == 5
    assert threads.engine_threads(settings(0), ModelSpec(ref="x", threads=0)) == threads.auto_threads()
    assert threads.engine_threads(settings(0), ModelSpec(ref="x"), "openvino") == threads.auto_threads(
        engine="openvino"
    )


def test_automatic_fits_the_affinity_mask() -> None:
    cores = threads.available_cores()
    for engine in (None, "torch", "openvino", "onnxruntime"):
        auto = threads.engine_threads(settings(0), ModelSpec(ref="x"), engine)
        assert 1 <= auto <= len(os.sched_getaffinity(0))
        assert auto == threads.auto_threads(cores, engine)


@pytest.mark.parametrize(
    ("engine", "cores", "expected"),
    [
        # torch leaves a core: its OpenMP barriers collapse when another program takes one.
        ("torch", 1, 1), ("torch", 2, 1), ("torch", 16, 15),
        (None, 2, 1),  # an engine not named: torch's rule, the one that never collapses
        ("fake", 2, 1),
        # OpenVINO (unpinned) and ONNX Runtime (not spinning) get every core.
        ("openvino", 1, 1), ("openvino", 2, 2), ("openvino", 16, 16),
        ("onnxruntime", 1, 1), ("onnxruntime", 2, 2), ("onnxruntime", 16, 16),
    ],
)  # fmt: skip
def test_automatic_threads_by_engine(engine: str | None, cores: int, expected: int) -> None:
    choice = threads.auto_choice(engine, cores)
    assert choice.threads == threads.auto_threads(cores, engine) == expected
    assert f"{cores} usable physical core" in choice.why or "the one usable physical core" in choice.why


AVX2 = ("avx", "avx2", "fma")
ZEN5 = (*AVX2, "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni")
AMX = (*ZEN5, "amx_tile", "amx_bf16")


def test_the_cpu_class_follows_its_features() -> None:
    assert threads.cpu_class(AVX2) == "avx2"
    assert threads.cpu_class(ZEN5) == "avx512_bf16"
    assert threads.cpu_class(AMX) == "amx"
    assert threads.cpu_class(()) == "avx2"


@pytest.mark.parametrize("engine", ["openvino", "onnxruntime"])
def test_the_reason_cites_the_measurement_of_the_cpus_class(engine: str) -> None:
    # The count is every core on each class; the reason names where its figures come from.
    avx2, zen5, amx = (threads.auto_choice(engine, 2, f) for f in (AVX2, ZEN5, AMX))
    assert avx2.threads == zen5.threads == amx.threads == 2
    assert "AVX2" in avx2.why and "Zen 5" not in avx2.why
    assert "Zen 5" in zen5.why and "AVX-512-BF16" in zen5.why and "AVX2" not in zen5.why
    if engine == "openvino":
        assert "AMX Xeon" in amx.why
    else:  # not measured on AMX: the AVX2 figures, saying so
        assert amx.why == avx2.why
    assert threads.auto_choice(engine, 2).why == avx2.why  # features unknown


def test_the_choice_passes_the_cpus_features_to_the_reason() -> None:
    from hfd.backends.hardware import CpuInfo

    zen5 = CpuInfo("v", "m", "x86_64", 2, 2, 2, ZEN5)
    for engine in ("openvino", "onnxruntime"):
        assert "Zen 5" in threads.thread_choice(settings(0), ModelSpec(ref="x"), engine, cpu=zen5).why
    assert "AVX2" in threads.thread_choice(settings(0), ModelSpec(ref="x"), "torch", cpu=zen5).why


def test_the_choice_says_which_setting_won() -> None:
    spec = ModelSpec(ref="x", threads=3)
    assert threads.thread_choice(settings(5), spec, "openvino") == threads.ThreadChoice(
        3, "the model's threads setting"
    )
    assert (
        threads.thread_choice(settings(5), ModelSpec(ref="x"), "torch").why == "the daemon's threads setting"
    )
    auto = threads.thread_choice(settings(0), ModelSpec(ref="x"), "onnxruntime")
    assert auto.why.startswith(f"all {threads.available_cores()} usable physical cores")


def _topology(root: Path, cpu: int, package: int, core: int) -> None:
    topo = root / f"cpu{cpu}" / "topology"
    topo.mkdir(parents=True)
    (topo / "physical_package_id").write_text(f"{package}\n")
    (topo / "core_id").write_text(f"{core}\n")


def test_smt_siblings_count_as_one_core(tmp_path: Path) -> None:
    # 2 packages x 2 cores x 2 hardware threads.
    cpu = 0
    for package in range(2):
        for core in range(2):
            for _ in range(2):
                _topology(tmp_path, cpu, package, core)
                cpu += 1
    assert threads.physical_cores(range(8), tmp_path) == 4
    assert threads.physical_cores([0, 1], tmp_path) == 1  # one core's two siblings
    assert threads.physical_cores([0, 2, 4], tmp_path) == 3
    # No topology to read: every CPU counts.
    assert threads.physical_cores([0, 1, 2], tmp_path / "missing") == 3


def test_the_real_topology_never_exceeds_the_cpu_count() -> None:
    allowed = threads.allowed_cpus()
    assert 1 <= threads.physical_cores(allowed) <= len(allowed)


def test_cgroup_quota(tmp_path: Path) -> None:
    f = tmp_path / "cpu.max"
    f.write_text("max 100000\n")
    assert threads.cgroup_quota(f) is None
    f.write_text("150000 100000\n")
    assert threads.cgroup_quota(f) == 2  # 1.5 CPUs: two threads can still run part of the time
    f.write_text("50000 100000\n")
    assert threads.cgroup_quota(f) == 1
    f.write_text("garbage\n")
    assert threads.cgroup_quota(f) is None
    assert threads.cgroup_quota(tmp_path / "absent") is None
