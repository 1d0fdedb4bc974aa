"""Which engine runs a task on this box: an ordered list of candidates, fastest first.

The order comes from measurements (``docs/engines.md`` has the numbers and the commands):

- An NVIDIA or AMD GPU beats any CPU path by an order of magnitude; torch drives both (ROCm
  builds of torch answer to ``cuda:N``). For embeddings ONNX Runtime's CUDA provider follows.
- An Intel GPU is OpenVINO's home turf; it comes before the CPU. The NPU runs encoders only
  (it compiles static shapes; continuous batching of a decoder is not supported there).
- Apple silicon: torch on MPS.
- x86 CPU, generation: OpenVINO first. Its ContinuousBatchingPipeline ran 32 requests x 64
  tokens at ~1.8x the torch engine's continuous batching on the 2-core AVX2 box.
- x86 CPU, embeddings: ONNX Runtime first (~2.2x torch at batch 1, ~1.1x at batch 32), then
  OpenVINO (~1.7x and ~1.1x), then torch. ONNX Runtime's export needs torch; where it cannot
  export, the manager falls back to OpenVINO.
- Arm CPU: torch first (OpenVINO's Arm CPU plugin is not measured here), then OpenVINO.

The model manager tries the candidates in order and logs each fallback; an engine that crashed
proving itself on a model here is remembered and skipped (``hfd.daemon.models.engine_memory``). A
pinned engine or device yields only that one candidate. This order is the static one: where a
model's candidates were measured on the machine serving it, the loader puts that order first
(``hfd.daemon.models.engine_choice``).

Which engines exist and which tasks each runs come from ``hfd.backends.registry``; an engine
whose record is not offered (the fake engine) is chosen only when pinned, or, with
``HFD_FAKE_ENGINE=1``, as the only candidate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

from hfd.backends import registry
from hfd.backends.base import Task
from hfd.backends.hardware import Device, HardwareReport
from hfd.client.errors import InvalidRequest, ModelUnavailable

TASKS: Final[tuple[Task, ...]] = ("generate", "embed")


@dataclass(frozen=True)
class Choice:
    engine: str
    device: str  # as the engine's load options take it: "cpu", "cuda:0", "mps", "GPU.0", "NPU"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_kind(device: str) -> str:
    """The family of a device string, across engines' spellings ("cuda:1" -> "cuda", "GPU.0" ->
    "intel_gpu")."""
    d = device.strip().lower()
    if d in ("cpu", ""):
        return "cpu"
    if d.startswith("cuda"):
        return "cuda"
    if d.startswith("gpu"):
        return "intel_gpu"
    if d.startswith("npu"):
        return "npu"
    return d.split(":")[0].split(".")[0]


def same_device(pinned: str, device: str) -> bool:
    """Whether a user's pin names this device: case-insensitive, and a bare family ("cuda",
    "GPU") names its first device."""
    a, b = pinned.strip().lower(), device.strip().lower()
    if a == b:
        return True
    if "." in a or ":" in a or device_kind(a) != device_kind(b):
        return False
    index = b.replace(":", ".").partition(".")[2]
    return index in ("", "0")


def _gpus(devices: tuple[Device, ...], kinds: tuple[str, ...]) -> list[Device]:
    found = [d for d in devices if d.kind in kinds]
    # Several GPUs: the one with the most memory first; the manager spreads models itself.
    return sorted(found, key=lambda d: -(d.memory_bytes or 0))


def candidates(task: Task, report: HardwareReport) -> list[Choice]:
    """Every engine/device that can run ``task`` here, fastest first."""
    forced = [
        r.name
        for r in registry.RECORDS
        if not r.default_offer and r.offered and task in r.tasks and _installed(report, r.name)
    ]
    if forced:  # an engine only tests ask for: never mixed with real ones
        return [Choice(name, "cpu", f"{registry.FAKE_ENGINE_ENV} is set") for name in forced]
    torch, ov, ort = report.torch, report.openvino, report.onnxruntime
    out: list[Choice] = []

    def add(engine: str, device: str, reason: str) -> None:
        r = registry.record(engine)
        if task in r.tasks and r.offered and all((c.engine, c.device) != (engine, device) for c in out):
            out.append(Choice(engine, device, reason))

    if torch.installed:
        for d in _gpus(torch.devices, ("cuda", "rocm")):
            add("torch", d.id, f"{d.kind.upper()} GPU {d.name}: torch on the GPU beats every CPU path")
    if ort.installed:
        for d in _gpus(ort.devices, ("cuda", "rocm")):
            add("onnxruntime", d.id, f"{d.kind.upper()} GPU through ONNX Runtime's {d.name}")
    if ov.installed:
        gpus = sorted(
            (d for d in ov.devices if d.kind == "intel_gpu"),
            key=lambda d: d.properties.get("device_type") != "discrete",
        )
        for d in gpus:
            add("openvino", d.id, f"Intel GPU {d.name}: OpenVINO's GPU plugin")
        if task == "embed":
            for d in ov.devices:
                if d.kind == "npu":
                    add("openvino", d.id, f"NPU {d.name}: OpenVINO, static shapes (encoders only)")
    if torch.installed and torch.has_kind("mps"):
        add("torch", "mps", "Apple GPU: torch on MPS")
    if ort.installed and ort.has_kind("coreml"):
        add("onnxruntime", "coreml", "Apple Neural Engine/GPU through ONNX Runtime's CoreML provider")
    for kind in ("qnn", "directml"):
        if ort.installed and ort.has_kind(kind):
            add("onnxruntime", kind, f"ONNX Runtime's {kind} provider")

    ov_cpu = ov.installed and ov.has_kind("cpu")
    ort_cpu = ort.installed and ort.has_kind("cpu")
    if report.cpu.is_x86:
        if task == "generate" and ov_cpu:
            add(
                "openvino",
                "cpu",
                "x86 CPU: OpenVINO ContinuousBatchingPipeline measured ~1.8x the torch engine",
            )
        if ort_cpu:
            add(
                "onnxruntime",
                "cpu",
                "x86 CPU: ONNX Runtime measured fastest for encoders (~2.2x torch at batch 1)",
            )
        if ov_cpu:
            add("openvino", "cpu", "x86 CPU: OpenVINO measured ~1.7x torch for encoders at batch 1")
    if torch.installed:
        add("torch", "cpu", "torch on the CPU: the reference engine, always loads")
    if ov_cpu:
        add("openvino", "cpu", "OpenVINO on the CPU (not measured on this architecture)")
    if ort_cpu:
        add("onnxruntime", "cpu", "ONNX Runtime on the CPU")
    return out


def choose_engine(
    task: str,
    report: HardwareReport,
    pinned_engine: str | None = None,
    pinned_device: str | None = None,
) -> list[Choice]:
    """Candidates for ``task`` in the order the model manager should try them.

    Raises ``InvalidRequest`` for an unknown task or engine, or an engine that cannot run the
    task, and ``ModelUnavailable`` when a pinned engine or device is not on this box (with the
    reason the detector recorded).
    """
    if task not in TASKS:
        raise InvalidRequest(f"unknown task {task!r}; known: {', '.join(TASKS)}", param="task")
    if pinned_engine is not None:
        if pinned_engine not in registry.ENGINES:
            raise InvalidRequest(
                f"unknown engine {pinned_engine!r}; known: {', '.join(sorted(registry.ENGINES))}",
                param="engine",
            )
        if task not in registry.ENGINES[pinned_engine].tasks:
            raise InvalidRequest(f"engine {pinned_engine!r} cannot {task}", param="engine")
        if not _installed(report, pinned_engine):
            why = report.engine(pinned_engine).reason if _probed(report, pinned_engine) else "not probed"
            raise ModelUnavailable(f"engine {pinned_engine!r} is not available: {why}")

    found = candidates(task, report)  # type: ignore[arg-type]  # checked against TASKS above
    if pinned_engine is None and pinned_device is None:
        if not found:
            raise ModelUnavailable(f"no engine installed can {task}; install hfd[torch] or hfd[openvino]")
        return found

    matches = [
        c
        for c in found
        if (pinned_engine is None or c.engine == pinned_engine)
        and (pinned_device is None or same_device(pinned_device, c.device))
    ]
    if matches:
        first = matches[0]
        pins = " and ".join(
            p for p, given in (("engine", pinned_engine), ("device", pinned_device)) if given is not None
        )
        return [Choice(first.engine, first.device, f"pinned {pins}; {first.reason}")]
    if pinned_device is None:
        assert pinned_engine is not None
        return [Choice(pinned_engine, "cpu", "pinned engine")]
    _check_device_seen(pinned_device, pinned_engine, report)
    engine = pinned_engine or _engine_for(device_kind(pinned_device), task, report)
    return [
        Choice(
            engine, pinned_device, "pinned device" if pinned_engine is None else "pinned engine and device"
        )
    ]


def _probed(report: HardwareReport, engine: str) -> bool:
    return any(p.name == engine for p in report.probes)


def _installed(report: HardwareReport, engine: str) -> bool:
    return _probed(report, engine) and report.engine(engine).installed


def _engine_for(kind: str, task: str, report: HardwareReport) -> str:
    preferred = {
        "cuda": "torch",
        "rocm": "torch",
        "mps": "torch",
        "intel_gpu": "openvino",
        "npu": "openvino",
    }.get(kind)
    if preferred is None:
        preferred = "onnxruntime" if task == "embed" else "torch"
    return preferred


def _check_device_seen(device: str, engine: str | None, report: HardwareReport) -> None:
    """Refuse a pin on a device no engine sees, saying why the detector could not see it."""
    kind = device_kind(device)
    if kind == "cpu":
        return
    probes = [report.engine(engine)] if engine else list(report.probes)
    kinds = {kind, "rocm"} if kind == "cuda" else {kind}
    if any(d.kind in kinds for p in probes for d in p.devices):
        return  # seen, just not under that exact id: let the engine say whether the index exists
    reasons = sorted({p.unavailable[k] for p in probes for k in kinds if k in p.unavailable})
    why = "; ".join(reasons) or "not detected"
    raise ModelUnavailable(f"device {device!r} is not available: {why}", details={"device": device})
