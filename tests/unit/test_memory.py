"""Memory estimates from real model files, and budgets per memory pool."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from safetensors import safe_open
from support.models import tiny_bert, tiny_llama

from hfd.backends.hardware import CpuInfo, Device, EngineProbe, HardwareReport, MemoryInfo
from hfd.daemon.models import memory
from hfd.daemon.models.budgets import Budgets, default_budgets
from hfd.daemon.models.memory import (
    RAM,
    estimate_model,
    kv_cache_bytes,
    weights_bytes,
)


def _param_count(path: Path) -> int:
    total = 0
    for f in path.glob("*.safetensors"):
        with safe_open(str(f), framework="numpy") as st:
            for name in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                total += st.get_tensor(name).size
    return total


def test_weights_from_safetensors_headers_match_the_tensors() -> None:
    path = tiny_llama()
    params = _param_count(path)
    assert weights_bytes(path) == params * 4  # stored as float32
    assert weights_bytes(path, "float16") == params * 2
    assert weights_bytes(path, "int8") == params


def test_kv_cache_formula() -> None:
    config = json.loads((tiny_llama() / "config.json").read_text())
    layers, kv_heads = config["num_hidden_layers"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    expected = layers * kv_heads * head_dim * 2 * 4 * 8 * 256
    assert kv_cache_bytes(config, max_running=8, context=256, element_bytes=4) == expected
    # An explicit head_dim wins over hidden/heads; multi-query attention has one KV head.
    assert kv_cache_bytes({**config, "head_dim": 32}, max_running=1, context=10, element_bytes=2) == (
        layers * kv_heads * 32 * 2 * 2 * 10
    )
    mqa = {"n_layer": 4, "n_head": 8, "n_embd": 256, "multi_query": True}
    assert kv_cache_bytes(mqa, max_running=2, context=16, element_bytes=2) == 4 * 1 * 32 * 2 * 2 * 2 * 16


def test_estimate_of_a_generator_and_an_encoder() -> None:
    llama = estimate_model(tiny_llama(), "generate", load_dtype="float32", max_running=4)
    config = json.loads((tiny_llama() / "config.json").read_text())
    assert llama.kv_cache == kv_cache_bytes(
        config, max_running=4, context=config["max_position_embeddings"], element_bytes=4
    )
    capped = estimate_model(tiny_llama(), "generate", load_dtype="float32", max_running=4, context_tokens=64)
    assert capped.kv_cache * 4 == llama.kv_cache
    assert llama.total == llama.weights + llama.kv_cache + llama.activations + llama.overhead
    assert llama.to_dict()["total"] == llama.total

    bert = estimate_model(tiny_bert(), "embed")
    assert bert.kv_cache == 0 and bert.activations > 0
    assert bert.weights == _param_count(tiny_bert()) * 4


def test_multimodal_configs_use_the_text_config(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps({"text_config": {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 8}})
    )
    est = estimate_model(tmp_path, "generate", load_dtype="float32", max_running=1, context_tokens=4)
    assert est.kv_cache == 2 * 2 * 4 * 2 * 4 * 1 * 4


def test_weight_files_prefer_safetensors_over_shipped_exports(tmp_path: Path) -> None:
    shutil.copytree(tiny_bert(), tmp_path / "m")
    m = tmp_path / "m"
    (m / "onnx").mkdir()
    (m / "onnx" / "model.onnx").write_bytes(b"\0" * 10_000)
    assert [p.name for p in memory.weight_files(m)] == ["model.safetensors"]
    (m / "model.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(b"\0" * 1234)
    assert [p.name for p in memory.weight_files(m)] == ["pytorch_model.bin"]
    assert weights_bytes(m) == 1234


def test_a_gguf_snapshot_counts_the_file_served_and_no_projector(tmp_path: Path) -> None:
    (tmp_path / "model-Q8_0.gguf").write_bytes(b"\0" * 100)
    (tmp_path / "mmproj-model-f16.gguf").write_bytes(b"\0" * 300)  # not read by the text pipeline
    assert [p.name for p in memory.weight_files(tmp_path)] == ["model-Q8_0.gguf"]
    assert weights_bytes(tmp_path) == 100
    (tmp_path / "model-Q4_K_M.gguf").write_bytes(b"\0" * 40)
    assert weights_bytes(tmp_path, gguf_file="model-Q4_K_M.gguf") == 40  # the one gguf_file names
    # Beside safetensors too: with gguf_file the GGUF file is served, so it is what is counted.
    shutil.copy(tiny_bert() / "model.safetensors", tmp_path / "model.safetensors")
    assert weights_bytes(tmp_path, gguf_file="model-Q8_0.gguf") == 100
    assert [p.name for p in memory.weight_files(tmp_path)] == ["model.safetensors"]
    est = estimate_model(tmp_path, "generate", gguf_file="model-Q4_K_M.gguf")
    assert est.weights == 40


def test_a_corrupt_header_falls_back_to_the_file_size(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 64)
    assert weights_bytes(tmp_path) == 64


def test_budgets_reserve_and_release() -> None:
    b = Budgets({RAM: 1000, "cuda:0": 500}, {"cuda:0": "cuda:0"})
    assert b.pool("cpu") == RAM and b.pool("cuda") == "cuda:0" and b.pool("CUDA:0") == "cuda:0"
    assert b.pool("GPU.0") == RAM  # no pool of its own: draws from RAM
    b.reserve("a", RAM, 600)
    b.reserve("g", "cuda:0", 400)
    assert b.room(RAM) == 400 and b.room("cuda:0") == 100
    assert b.room(RAM, excluding="a") == 1000
    assert not b.fits_alone("cuda:0", 501)
    snap = b.snapshot()
    assert snap[RAM] == {"budget_bytes": 1000, "used_bytes": 600, "models": ["a"]}
    b.release("a")
    assert b.used(RAM) == 0 and b.reserved("a") == 0


def _report(total: int, limit: int | None, devices: tuple[Device, ...]) -> HardwareReport:
    cpu = CpuInfo("v", "m", "x86_64", 2, 2, 2, ())
    return HardwareReport(
        system="Linux",
        python="3.11",
        cpu=cpu,
        memory=MemoryInfo(total_bytes=total, available_bytes=total // 2, limit_bytes=limit),
        torch=EngineProbe("torch", True, devices=tuple(d for d in devices if d.engine == "torch")),
        openvino=EngineProbe("openvino", True, devices=tuple(d for d in devices if d.engine == "openvino")),
        onnxruntime=EngineProbe("onnxruntime", False),
    )


def test_default_budgets_are_a_share_of_what_detection_found() -> None:
    gpu = Device(engine="torch", id="cuda:0", kind="cuda", name="GPU", memory_bytes=10_000)
    igpu = Device(
        engine="openvino", id="GPU.0", kind="intel_gpu", name="iGPU", memory_bytes=8_000,
        properties={"device_type": "integrated"},
    )  # fmt: skip
    b = default_budgets(0, 0, _report(1_000_000, None, (gpu, igpu)))
    assert b.limits[RAM] == 750_000
    assert b.limits["cuda:0"] == 9_000
    assert b.pool("GPU.0") == RAM  # integrated graphics share RAM
    # A cgroup limit below the physical memory is what counts; explicit settings win.
    assert default_budgets(0, 0, _report(1_000_000, 400_000, ())).limits[RAM] == 300_000
    explicit = default_budgets(123, 45, _report(1_000_000, None, (gpu,)))
    assert explicit.limits == {RAM: 123, "cuda:0": 45}


def test_dtype_bytes() -> None:
    assert memory.dtype_bytes("bfloat16") == 2
    assert memory.dtype_bytes("torch.float16") == 2
    assert memory.dtype_bytes(None, default=4) == 4
