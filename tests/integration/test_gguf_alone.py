"""A GGUF repository as most are published: the ``.gguf`` file alone, no config.json and no
tokenizer files. It is detected as a generation model from the GGUF's metadata, served by the
OpenVINO engine tokenizing with transformers' tokenizer converted from the file
(``AutoTokenizer.from_pretrained(dir, gguf_file=...)``), and its greedy tokens equal
transformers' model loaded from the same file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.engine_steps import drive
from support.gguf_models import tiny_llama_gguf_alone

from hfd.backends.base import LoadOptions, SamplingParams
from hfd.client.errors import ModelUnavailable
from hfd.daemon.tasks.registry import detect_task, guess_task

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
torch = pytest.importorskip("torch", reason="transformers is the oracle (hfd[torch])")

from hfd.backends.openvino_backend import OpenVINOBackend, OVGenerator  # noqa: E402

PROMPTS = ["hello world the quick", "Paris is the capital of", "Write a short poem about the ocean.", "x"]
N = 16


def _file(path: Path) -> str:
    return next(path.glob("*.gguf")).name


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OVGenerator]:
    opts = LoadOptions(path=tiny_llama_gguf_alone("f16"), task="generate", dtype="float32", threads=1,
                       max_running=8, cache_dir=tmp_path_factory.mktemp("gguf"))  # fmt: skip
    gen = OpenVINOBackend().load_generator(opts)
    yield gen
    gen.close()


def _transformers_model(path: Path) -> Any:
    """transformers' Llama with the GGUF's dequantized tensors (what ``from_pretrained(dir,
    gguf_file=...)`` loads; that path also wants accelerate, which hfd does not install)."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(path, gguf_file=_file(path))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    tensors = load_gguf_checkpoint(str(path / _file(path)), return_tensors=True, model_to_load=model)[
        "tensors"
    ]
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    model.tie_weights()
    return model


def test_a_gguf_file_alone_is_a_generation_model() -> None:
    path = tiny_llama_gguf_alone("f16")
    assert not (path / "config.json").exists() and not (path / "tokenizer.json").exists()
    assert detect_task(path) == "generate"
    assert guess_task(path) == "generate"


def test_torch_refuses_it_naming_openvino(tmp_path: Path) -> None:
    from hfd.backends.torch_backend import TorchBackend

    opts = LoadOptions(path=tiny_llama_gguf_alone("f16"), task="generate", cache_dir=tmp_path)
    with pytest.raises(ModelUnavailable, match=r"GGUF weights only.*openvino"):
        TorchBackend().load_generator(opts)


@pytest.mark.slow
def test_gguf_alone_greedy_tokens_equal_transformers_on_the_file(served: OVGenerator) -> None:
    from transformers import AutoTokenizer

    path = tiny_llama_gguf_alone("f16")
    tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=_file(path))
    prompts = [served.encode_prompt(p) for p in PROMPTS]
    assert prompts == [tokenizer(p)["input_ids"] for p in PROMPTS]
    model = _transformers_model(path)
    # The context and the end of sequence come from the GGUF's metadata, as transformers reads it.
    assert served.context_length == model.config.max_position_embeddings
    assert model.config.eos_token_id in served.eos_token_ids
    expected = []
    for ids in prompts:
        with torch.no_grad():
            seq = model.generate(torch.tensor([ids]), max_new_tokens=N, min_new_tokens=N, do_sample=False)
        expected.append(seq[0, len(ids) :].tolist())
    params = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)
    outs = drive(served, {i: (ids, params) for i, ids in enumerate(prompts)})
    assert [[t for out in outs[i] for t in out.token_ids] for i in range(len(prompts))] == expected
    assert served.weight_format == "gguf"
