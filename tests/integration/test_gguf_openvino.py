"""GGUF snapshots on the OpenVINO engine: the tiny Llama converted to an F16 GGUF by llama.cpp's
converter, served from the .gguf file by the ContinuousBatchingPipeline with the snapshot's
tokenizer, against transformers' greedy tokens on the original safetensors snapshot; the torch
engine refuses the GGUF snapshot, naming the engine that reads it."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.engine_steps import drive
from support.gguf_models import tiny_llama_gguf
from support.models import tiny_llama

from hfd.backends.base import LoadOptions, SamplingParams
from hfd.backends.openvino_backend import OpenVINOBackend, OVGenerator
from hfd.client.errors import InvalidRequest, ModelUnavailable
from hfd.daemon.models.memory import weights_bytes

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
torch = pytest.importorskip("torch", reason="transformers is the oracle (hfd[torch])")

PROMPTS = ["hello world the quick", "Paris is the capital of", "Write a short poem about the ocean.", "x"]
N = 16


def _opts(path: Path, tmp: Path, **extra: object) -> LoadOptions:
    return LoadOptions(path=path, task="generate", cache_dir=tmp, dtype="float32", threads=1,  # type: ignore[arg-type]
                       max_running=8, extra=dict(extra))  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OVGenerator]:
    gen = OpenVINOBackend().load_generator(_opts(tiny_llama_gguf("f16"), tmp_path_factory.mktemp("gguf")))
    yield gen
    gen.close()


def _greedy(gen: OVGenerator, prompts: list[list[int]]) -> list[list[int]]:
    params = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)
    outs = drive(gen, {i: (ids, params) for i, ids in enumerate(prompts)})
    return [[t for out in outs[i] for t in out.token_ids] for i in range(len(prompts))]


def _transformers(prompts: list[list[int]]) -> list[list[int]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama(), dtype=torch.float32).eval()
    out = []
    for ids in prompts:
        with torch.no_grad():
            seq = model.generate(torch.tensor([ids]), max_new_tokens=N, min_new_tokens=N, do_sample=False)
        out.append(seq[0, len(ids) :].tolist())
    return out


@pytest.mark.slow
def test_gguf_greedy_tokens_equal_transformers(served: OVGenerator) -> None:
    prompts = [served.encode_prompt(p) for p in PROMPTS]
    # The snapshot's tokenizer, not GenAI's from the GGUF metadata: ids are transformers' own.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama())
    assert prompts == [tokenizer(p)["input_ids"] for p in PROMPTS]
    assert _greedy(served, prompts) == _transformers(prompts)
    assert served.weight_format == "gguf"
    size = (tiny_llama_gguf("f16") / "tiny-llama-F16.gguf").stat().st_size
    assert served.memory_bytes() >= size
    assert weights_bytes(tiny_llama_gguf("f16")) == size  # the manager's estimate before loading


def test_torch_refuses_gguf_naming_openvino(tmp_path: Path) -> None:
    from hfd.backends.torch_backend import TorchBackend

    with pytest.raises(ModelUnavailable, match=r"GGUF weights only.*openvino"):
        TorchBackend().load_generator(_opts(tiny_llama_gguf("f16"), tmp_path))


def test_unknown_gguf_file_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as err:
        OpenVINOBackend().load_generator(_opts(tiny_llama_gguf("f16"), tmp_path, gguf_file="other.gguf"))
    assert err.value.param == "options.gguf_file"
    assert "tiny-llama-F16.gguf" in err.value.message


def test_weight_format_is_refused_for_gguf(tmp_path: Path) -> None:
    opts = dataclasses.replace(_opts(tiny_llama_gguf("f16"), tmp_path), weight_format="int8")
    with pytest.raises(InvalidRequest) as err:
        OpenVINOBackend().load_generator(opts)
    assert err.value.param == "weight_format"


def test_gguf_loads_at_the_cpus_default_precision(tmp_path: Path) -> None:
    """No ``dtype``: the CPU plugin's own precision (bf16 on CPUs with native bf16, where it refuses
    an f32 KV cache; f32 elsewhere), at two threads (bf16 never runs at one, see openvino_cpu)."""
    opts = dataclasses.replace(_opts(tiny_llama_gguf("f16"), tmp_path), dtype=None, threads=2)
    gen = OpenVINOBackend().load_generator(opts)
    try:
        assert gen.precision in ("f32", "bf16")
        assert len(_greedy(gen, [gen.encode_prompt(PROMPTS[0])])[0]) == N
    finally:
        gen.close()


@pytest.mark.slow
def test_the_named_gguf_is_served_from_a_snapshot_with_safetensors_too(tmp_path: Path) -> None:
    """``gguf_file`` on a snapshot that also has the model's safetensors: GenAI reads the named
    GGUF (no export of the safetensors), with transformers' greedy tokens."""
    both = tmp_path / "both"
    shutil.copytree(tiny_llama_gguf("f16"), both)
    for weights in tiny_llama().glob("*.safetensors"):
        shutil.copy(weights, both / weights.name)
    gen = OpenVINOBackend().load_generator(_opts(both, tmp_path / "cache", gguf_file="tiny-llama-F16.gguf"))
    try:
        assert gen.weight_format == "gguf"
        assert not (tmp_path / "cache" / "exports").exists()  # nothing was exported
        prompts = [gen.encode_prompt(PROMPTS[1])]
        assert _greedy(gen, prompts) == _transformers(prompts)
    finally:
        gen.close()
