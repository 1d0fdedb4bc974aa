"""The engine-selection policy over hardware reports of different boxes."""

from __future__ import annotations

import pytest

from hfd.backends import hardware
from hfd.backends.hardware import CpuInfo, Device, EngineProbe, HardwareReport, MemoryInfo
from hfd.backends.policy import choose_engine, device_kind, same_device
from hfd.client.errors import InvalidRequest, ModelUnavailable

X86 = CpuInfo("GenuineIntel", "Xeon", "x86_64", 8, 4, 8, ("avx2", "avx512f"))
ARM = CpuInfo("ARM", "Neoverse", "aarch64", 8, 8, 8, ("neon", "sve"))
APPLE = CpuInfo("Apple", "Apple M3", "arm64", 8, 8, 8, ("neon",))
MEM = MemoryInfo(total_bytes=32 << 30, available_bytes=16 << 30)


def _torch(*kinds: str) -> EngineProbe:
    devices = [Device("torch", "cpu", "cpu", "cpu")]
    for i, kind in enumerate(k for k in kinds if k in ("cuda", "rocm")):
        devices.append(Device("torch", f"cuda:{i}", kind, f"GPU {i}", memory_bytes=(24 - i) << 30))
    if "mps" in kinds:
        devices.append(Device("torch", "mps", "mps", "Apple GPU"))
    unavailable = {} if "cuda" in kinds else {"cuda": "no NVIDIA driver (libcuda.so.1 not found)"}
    return EngineProbe("torch", True, "2.13.0", devices=tuple(devices), unavailable=unavailable)


def _openvino(*extra: Device) -> EngineProbe:
    cpu = Device("openvino", "CPU", "cpu", "cpu")
    unavailable = {} if extra else {"intel_gpu": "openvino: no GPU plugin device", "npu": "openvino: no NPU"}
    return EngineProbe("openvino", True, "2026.4.1", devices=(cpu, *extra), unavailable=unavailable)


def _ort(*providers: str) -> EngineProbe:
    devices = [Device("onnxruntime", "cpu", "cpu", "cpu")]
    if "CUDAExecutionProvider" in providers:
        devices.append(Device("onnxruntime", "cuda:0", "cuda", "CUDAExecutionProvider"))
    if "CoreMLExecutionProvider" in providers:
        devices.append(Device("onnxruntime", "coreml", "coreml", "CoreMLExecutionProvider"))
    return EngineProbe(
        "onnxruntime", True, "1.32.0", devices=tuple(devices), providers=(*providers, "CPUExecutionProvider")
    )


MISSING = {
    name: EngineProbe(
        name, False, reason=f"{name} not installed", unavailable={"cuda": f"{name} not installed"}
    )
    for name in ("torch", "openvino", "onnxruntime")
}


def report(
    cpu: CpuInfo = X86,
    torch: EngineProbe | None = None,
    openvino: EngineProbe | None = None,
    onnxruntime: EngineProbe | None = None,
    system: str = "Linux",
) -> HardwareReport:
    return HardwareReport(
        system=system,
        python="3.11",
        cpu=cpu,
        memory=MEM,
        torch=torch or _torch(),
        openvino=openvino or _openvino(),
        onnxruntime=onnxruntime or _ort(),
    )


def pairs(choices: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(c.engine, c.device) for c in choices]


def test_x86_cpu_prefers_openvino_then_torch_for_generation() -> None:
    assert pairs(choose_engine("generate", report())) == [("openvino", "cpu"), ("torch", "cpu")]


def test_x86_cpu_embeddings_order_is_onnxruntime_openvino_torch() -> None:
    assert pairs(choose_engine("embed", report())) == [
        ("onnxruntime", "cpu"),
        ("openvino", "cpu"),
        ("torch", "cpu"),
    ]


def test_cuda_gpu_comes_first_and_the_cpu_paths_remain_as_fallbacks() -> None:
    r = report(torch=_torch("cuda"), onnxruntime=_ort("CUDAExecutionProvider"))
    gen = pairs(choose_engine("generate", r))
    assert gen[0] == ("torch", "cuda:0")
    assert ("openvino", "cpu") in gen and ("torch", "cpu") in gen
    embed = pairs(choose_engine("embed", r))
    assert embed[:2] == [("torch", "cuda:0"), ("onnxruntime", "cuda:0")]


def test_several_gpus_largest_memory_first() -> None:
    r = report(torch=_torch("cuda", "cuda"))
    assert pairs(choose_engine("generate", r))[:2] == [("torch", "cuda:0"), ("torch", "cuda:1")]


def test_rocm_gpu_runs_torch_on_cuda_device_names() -> None:
    choices = choose_engine("generate", report(torch=_torch("rocm")))
    assert (choices[0].engine, choices[0].device) == ("torch", "cuda:0")
    assert "ROCM" in choices[0].reason


def test_intel_gpu_and_npu_go_to_openvino() -> None:
    gpu = Device("openvino", "GPU.0", "intel_gpu", "Intel Arc A770", properties={"device_type": "discrete"})
    igpu = Device("openvino", "GPU.1", "intel_gpu", "Intel UHD", properties={"device_type": "integrated"})
    npu = Device("openvino", "NPU", "npu", "Intel AI Boost")
    r = report(openvino=_openvino(igpu, gpu, npu))
    gen = pairs(choose_engine("generate", r))
    assert gen[:2] == [("openvino", "GPU.0"), ("openvino", "GPU.1")]
    assert ("openvino", "NPU") not in gen  # continuous batching does not run on the NPU
    embed = pairs(choose_engine("embed", r))
    assert embed[:3] == [("openvino", "GPU.0"), ("openvino", "GPU.1"), ("openvino", "NPU")]


def test_apple_silicon_prefers_torch_mps() -> None:
    r = report(cpu=APPLE, torch=_torch("mps"), openvino=MISSING["openvino"], system="Darwin")
    assert pairs(choose_engine("generate", r)) == [("torch", "mps"), ("torch", "cpu")]
    r = report(cpu=APPLE, torch=_torch("mps"), onnxruntime=_ort("CoreMLExecutionProvider"), system="Darwin")
    assert pairs(choose_engine("embed", r))[:2] == [("torch", "mps"), ("onnxruntime", "coreml")]


def test_arm_cpu_prefers_torch() -> None:
    assert pairs(choose_engine("generate", report(cpu=ARM))) == [("torch", "cpu"), ("openvino", "cpu")]


def test_torch_only_box_falls_back_to_torch_cpu() -> None:
    r = report(openvino=MISSING["openvino"], onnxruntime=MISSING["onnxruntime"])
    for task in ("generate", "embed"):
        choices = choose_engine(task, r)
        assert pairs(choices) == [("torch", "cpu")]
        assert choices[0].reason


def test_no_engine_at_all_is_model_unavailable() -> None:
    r = report(torch=MISSING["torch"], openvino=MISSING["openvino"], onnxruntime=MISSING["onnxruntime"])
    with pytest.raises(ModelUnavailable):
        choose_engine("generate", r)


def test_a_pinned_engine_yields_only_that_candidate() -> None:
    r = report(torch=_torch("cuda"))
    choices = choose_engine("generate", r, pinned_engine="openvino")
    assert pairs(choices) == [("openvino", "cpu")]
    assert choices[0].reason.startswith("pinned engine")
    assert pairs(choose_engine("generate", r, pinned_engine="torch")) == [("torch", "cuda:0")]


def test_a_pinned_device_yields_only_that_candidate() -> None:
    gpu = Device("openvino", "GPU.0", "intel_gpu", "Intel Arc")
    r = report(torch=_torch("cuda"), openvino=_openvino(gpu))
    assert pairs(choose_engine("generate", r, pinned_device="cpu")) == [("openvino", "cpu")]
    assert pairs(choose_engine("embed", r, pinned_device="CPU")) == [("onnxruntime", "cpu")]
    assert pairs(choose_engine("generate", r, pinned_device="GPU")) == [("openvino", "GPU.0")]
    assert pairs(choose_engine("generate", r, pinned_device="cuda")) == [("torch", "cuda:0")]
    assert pairs(choose_engine("generate", r, "torch", "cpu")) == [("torch", "cpu")]
    # An index the detector did not list is still passed on: the engine says whether it exists.
    assert pairs(choose_engine("generate", r, pinned_device="cuda:3")) == [("torch", "cuda:3")]


def test_pins_that_cannot_work_are_refused_with_the_reason() -> None:
    r = report(openvino=MISSING["openvino"])
    with pytest.raises(ModelUnavailable, match="openvino not installed"):
        choose_engine("generate", r, pinned_engine="openvino")
    with pytest.raises(ModelUnavailable, match="libcuda"):
        choose_engine("generate", r, pinned_device="cuda:0")
    with pytest.raises(InvalidRequest) as err:
        choose_engine("generate", r, pinned_engine="onnxruntime")
    assert err.value.code == "invalid_request" and err.value.param == "engine"
    with pytest.raises(InvalidRequest):
        choose_engine("generate", r, pinned_engine="tensorflow")
    with pytest.raises(InvalidRequest):
        choose_engine("translate", r)


def test_device_names_across_engines() -> None:
    assert device_kind("cuda:1") == "cuda"
    assert device_kind("GPU.0") == "intel_gpu"
    assert device_kind("CPU") == "cpu"
    assert same_device("gpu", "GPU.0") and same_device("GPU", "GPU")
    assert same_device("cuda", "cuda:0") and not same_device("cuda", "cuda:1")
    assert same_device("CPU", "cpu") and not same_device("cuda:0", "cuda:1")


def test_this_machine_gets_a_choice_for_every_task() -> None:
    pytest.importorskip("torch", reason="a choice per task needs an installed engine")
    here = hardware.detect()
    for task in ("generate", "embed"):
        choices = choose_engine(task, here)
        assert choices and all(c.reason for c in choices)
        if (
            here.cpu.is_x86
            and here.openvino.installed
            and here.onnxruntime.installed
            and not here.accelerators
        ):
            assert choices[0].engine == {"generate": "openvino", "embed": "onnxruntime"}[task]
