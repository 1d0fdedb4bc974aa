"""The group size activations are quantized in before int8/int4 matmuls, as a generation load
sets it among its compile properties (``openvino_backend._activation_group``): the measured
default only on its CPU class and weights, the model option everywhere on the CPU (over a GGUF
pipeline's "off" too), and refused rather than ignored on another device. The rule itself is
``tests/unit/test_openvino_cpu.py``'s; the property reaching a real pipeline,
``tests/integration/test_openvino_backend.py``'s."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.backends import gguf, hardware, openvino_backend
from hfd.backends.base import LoadOptions
from hfd.backends.hardware import CpuInfo, parse_cpuinfo
from hfd.client.errors import InvalidRequest

AVX2 = "fpu sse2 sse4_2 avx avx2 fma f16c"
ZEN5 = AVX2 + " avx512f avx512bw avx512vl avx512_vnni avx512_bf16 avx512_vbmi2"
AMX = ZEN5 + " amx_tile amx_bf16 amx_int8"
KEY = "DYNAMIC_QUANTIZATION_GROUP_SIZE"


def _cpu(monkeypatch: pytest.MonkeyPatch, flags: str) -> None:
    _, _, found = parse_cpuinfo(f"vendor_id\t: x\nflags\t\t: {flags}\n")
    monkeypatch.setattr(
        hardware, "probe_cpu", lambda: CpuInfo("v", "m", "x86_64", 2, 2, 2, tuple(sorted(found)))
    )
    cpu_device = hardware.Device("openvino", "CPU", "cpu", "CPU")
    monkeypatch.setattr(
        hardware,
        "probe_openvino",
        lambda: hardware.EngineProbe(name="openvino", installed=True, devices=(cpu_device,)),
    )


def _properties(
    weight_format: str, device: str = "CPU", path: Path = Path("."), **extra: object
) -> dict[str, object]:
    opts = LoadOptions(path=path, task="generate", threads=2, extra=dict(extra))
    base = openvino_backend._compile_properties(opts, "CPU")
    if weight_format == gguf.WEIGHT_FORMAT:
        base = gguf.properties("CPU", base, openvino_backend._cpu_precision(base))
    return openvino_backend._activation_group(opts, base, weight_format, device)


@pytest.mark.parametrize(("flags", "weights", "group"), [
    (ZEN5, "int8", 128),  # measured there
    (ZEN5, "fp32", None), (ZEN5, "int4", None),  # fp32: nothing to quantize; int4: its widths unknown here
    (AMX, "int8", None), (AVX2, "int8", None),  # nor on these classes: OpenVINO's default stays
])  # fmt: skip
def test_the_default_group_where_it_was_measured(
    monkeypatch: pytest.MonkeyPatch, flags: str, weights: str, group: int | None
) -> None:
    _cpu(monkeypatch, flags)
    assert _properties(weights).get(KEY) == group


def test_the_model_option_wins_on_every_cpu_and_over_a_gguf_pipeline(monkeypatch: pytest.MonkeyPatch) -> None:
    for flags in (AVX2, ZEN5, AMX):
        _cpu(monkeypatch, flags)
        assert _properties("int8", dynamic_quantization_group_size=32)[KEY] == 32
    _cpu(monkeypatch, AVX2)
    assert _properties(gguf.WEIGHT_FORMAT)[KEY] == "0"  # GGUF's exact settings by default
    assert _properties(gguf.WEIGHT_FORMAT, dynamic_quantization_group_size=64)[KEY] == 64


def test_the_option_is_refused_off_the_cpu_and_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu(monkeypatch, ZEN5)
    assert KEY not in _properties("int8", device="GPU")  # a GPU load gets no CPU property
    for device, value in (("GPU", 128), ("CPU", -1), ("CPU", "lots")):
        with pytest.raises(InvalidRequest) as err:
            _properties("int8", device=device, dynamic_quantization_group_size=value)
        assert err.value.param == "options.dynamic_quantization_group_size"


def test_the_model_manager_refuses_a_bad_group_before_it_exports(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from hfd.daemon.models import exporting

    def no_export(*args: object) -> None:
        raise AssertionError("exported before the options were checked")

    monkeypatch.setattr("hfd.backends.openvino_export.prepare_ir", no_export)
    _cpu(monkeypatch, ZEN5)
    opts = LoadOptions(path=tmp_path, task="generate", threads=2, cache_dir=tmp_path / "cache",
                       extra={"dynamic_quantization_group_size": "lots"})  # fmt: skip
    with pytest.raises(InvalidRequest) as err:
        exporting.export("openvino", opts, {})  # what a load, a pull and a measurement run first
    assert err.value.param == "options.dynamic_quantization_group_size"


@pytest.mark.parametrize(("hidden", "intermediate", "group"), [(1536, 4096, 128), (576, 1536, None)])
def test_int4_weights_get_the_group_where_their_own_groups_fit(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hidden: int, intermediate: int, group: int | None
) -> None:
    import json

    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate, "num_attention_heads": 12}
    ))  # fmt: skip
    _cpu(monkeypatch, ZEN5)
    assert _properties("int4", path=tmp_path).get(KEY) == group
    assert KEY not in _properties("int4")  # no config to read: OpenVINO's default
