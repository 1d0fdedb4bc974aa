"""The compile properties of a GGUF pipeline on the CPU: transformers-exact settings (f32 KV
cache, no dynamic quantization) where the CPU computes in f32; no f32 KV cache where it computes
in bf16, which OpenVINO's paged attention refuses (checked against the real plugin by
tests/integration/test_gguf_openvino.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.backends import gguf, hardware, openvino_backend
from hfd.backends.base import LoadOptions
from hfd.backends.hardware import CpuInfo, parse_cpuinfo

AVX2 = "fpu sse2 sse4_2 avx avx2 fma f16c"
BF16 = AVX2 + " avx512f avx512bw avx512vl avx512_vnni avx512_bf16"


def _cpu(monkeypatch: pytest.MonkeyPatch, flags: str) -> None:
    _, _, found = parse_cpuinfo(f"vendor_id\t: x\nflags\t\t: {flags}\n")
    monkeypatch.setattr(
        hardware, "probe_cpu", lambda: CpuInfo("v", "m", "x86_64", 2, 2, 2, tuple(sorted(found)))
    )
    monkeypatch.setattr(
        hardware, "probe_openvino", lambda: hardware.EngineProbe(name="openvino", installed=True)
    )


def _gguf_properties(dtype: str | None) -> dict[str, object]:
    opts = LoadOptions(path=Path("."), task="generate", threads=2, dtype=dtype)
    base = openvino_backend._compile_properties(opts, "CPU")
    return gguf.properties("CPU", base, openvino_backend._cpu_precision(base))


def test_f32_compute_gets_the_exact_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, AVX2)
    assert _gguf_properties(None) == {"INFERENCE_NUM_THREADS": 2, **gguf.CPU_PROPERTIES}


def test_bf16_compute_keeps_the_plugins_kv_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, BF16)
    props = _gguf_properties(None)
    assert "KV_CACHE_PRECISION" not in props
    assert props["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "0"
    # float32 asked on the same CPU: the exact settings again.
    assert _gguf_properties("float32") == {
        "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": "f32", **gguf.CPU_PROPERTIES
    }  # fmt: skip


def test_other_devices_get_only_what_was_asked() -> None:
    assert gguf.properties("GPU.0", {"INFERENCE_PRECISION_HINT": "f16"}, "f16") == {
        "INFERENCE_PRECISION_HINT": "f16"
    }
