"""Hardware detection on this machine, and the probes' error paths (libraries made unimportable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hfd.backends import hardware, host

LINUX = sys.platform.startswith("linux")


@pytest.fixture(autouse=True)
def fresh_probes() -> Iterator[None]:
    """Probes are cached per process: start and end each test with a clean cache, so a test
    that breaks an import does not leave a wrong answer behind."""
    hardware.clear_cache()
    yield
    hardware.clear_cache()


def _cpuinfo_field(name: str) -> str | None:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


@pytest.mark.skipif(not LINUX, reason="compares with /proc/cpuinfo, which only Linux has")
def test_cpu_features_match_proc_cpuinfo() -> None:
    flags = set((_cpuinfo_field("flags") or _cpuinfo_field("features") or "").split())
    report = hardware.detect()
    table = host._X86_FLAGS if report.cpu.is_x86 else host._ARM_FLAGS
    for flag, name in table.items():
        expected = flag in flags or any(f in flags for f, n in table.items() if n == name)
        assert report.cpu.has(name) == expected, f"{name} (from flag {flag})"
    if report.cpu.is_x86:
        assert report.cpu.vendor == _cpuinfo_field("vendor_id")
        assert report.cpu.model == _cpuinfo_field("model name")
    assert report.cpu.logical_cores == os.cpu_count()
    assert 1 <= report.cpu.physical_cores <= report.cpu.logical_cores
    assert 1 <= report.cpu.usable_cores <= report.cpu.logical_cores


@pytest.mark.skipif(not LINUX, reason="compares with /proc/meminfo, which only Linux has")
def test_memory_matches_proc_meminfo() -> None:
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = int(next(line for line in meminfo.splitlines() if line.startswith("MemTotal:")).split()[1])
    report = hardware.detect()
    assert report.memory.total_bytes == total_kb * 1024
    assert 0 < report.memory.available_bytes <= report.memory.total_bytes


def test_parse_cpuinfo_reads_arm_features() -> None:
    # The shape of /proc/cpuinfo on an Arm Neoverse server (no vendor_id or model name lines).
    text = (
        "processor\t: 0\nBogoMIPS\t: 243.75\n"
        "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
        "jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs "
        "paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 "
        "i8mm bf16 dgh rng bti\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd4f\n"
    )
    vendor, model, features = hardware.parse_cpuinfo(text)
    assert vendor == "ARM"
    assert model == "part 0xd4f"
    assert {"neon", "sve", "sve2", "bf16", "i8mm", "dotprod", "fp16"} <= features
    assert not any(f.startswith("avx") for f in features)


def test_parse_cpuinfo_reads_x86_avx512_and_amx() -> None:
    text = (
        "vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        "flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 "
        "amx_tile amx_bf16 amx_int8\n"
    )
    vendor, model, features = hardware.parse_cpuinfo(text)
    assert vendor == "GenuineIntel"
    assert "Xeon" in model
    assert {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"} <= features
    assert "avx512_fp16" not in features


def test_no_nvidia_gpu_reports_the_missing_driver() -> None:
    if hardware.nvidia_driver_reason() is None:
        pytest.skip("an NVIDIA driver is installed on this machine")
    report = hardware.detect()
    assert not report.torch.has_kind("cuda")
    assert "libcuda" in report.torch.unavailable["cuda"] or "torch" in report.torch.unavailable["cuda"]
    assert not [d for d in report.accelerators if d.kind == "cuda"]


def test_report_is_json_and_lists_choices_per_task() -> None:
    pytest.importorskip("torch", reason="a choice per task needs an installed engine")
    data = hardware.hardware_json()
    again = json.loads(json.dumps(data))
    assert again["cpu"]["model"] == hardware.detect().cpu.model
    assert set(again["choices"]) == {"generate", "embed"}
    for task, choices in again["choices"].items():
        assert choices, f"no engine for {task}"
        assert {"engine", "device", "reason"} <= set(choices[0])


def test_probes_are_cached_until_refreshed() -> None:
    first = hardware.detect()
    assert hardware.detect().cpu is first.cpu
    assert hardware.detect().openvino is first.openvino
    assert hardware.detect(refresh=True).cpu is not first.cpu


@pytest.mark.parametrize("module", ["openvino", "onnxruntime", "torch"])
def test_missing_library_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    # A None entry in sys.modules makes `import <module>` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, module, None)
    hardware.clear_cache()
    result = getattr(hardware, f"probe_{module}")()
    assert result.installed is False
    assert module in result.reason
    assert result.devices == ()
    report = hardware.detect()
    assert report.engine(module).installed is False
    json.dumps(report.to_dict())  # still a complete report


def test_choices_skip_an_engine_that_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    hardware.clear_cache()
    data = hardware.hardware_json()
    engines = {c["engine"] for choices in data["choices"].values() for c in choices}
    assert "openvino" not in engines
    assert data["openvino"]["reason"] == "openvino not installed"


def test_importing_and_detecting_leave_heavy_engines_alone() -> None:
    """`import hfd.backends.hardware` imports no engine; detection imports torch only when a
    GPU driver (or macOS) gives it something to find."""
    code = (
        "import sys, json\n"
        "import hfd.backends.hardware as h\n"
        "before = {m: m in sys.modules for m in ('torch', 'openvino', 'onnxruntime')}\n"
        "h.detect()\n"
        "after = 'torch' in sys.modules\n"
        "driver = h.nvidia_driver_reason() is None or h.rocm_driver_reason() is None or sys.platform == 'darwin'\n"
        "print(json.dumps({'before': before, 'after': after, 'driver': driver}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["before"] == {"torch": False, "openvino": False, "onnxruntime": False}
    if not result["driver"]:
        assert result["after"] is False
