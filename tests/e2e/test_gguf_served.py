"""A GGUF snapshot served by a real ``hfd serve``: the tiny Llama's F16 GGUF directory, named in
the config with no engine pinned, is loaded by the OpenVINO engine (the torch engine refuses it)
and its greedy completions through the openai SDK are transformers' on the original snapshot."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.daemon import running_daemon
from support.gguf_models import tiny_llama_gguf, tiny_llama_greedy_text

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
torch = pytest.importorskip("torch", reason="transformers is the oracle (hfd[torch])")
openai = pytest.importorskip("openai", reason="the openai SDK is the client")

PROMPTS = ["hello world the quick", "Paris is the capital of", "Write a short poem about the ocean."]
N = 16


def _transformers(prompt: str) -> str:
    return tiny_llama_greedy_text(prompt, N)


@pytest.mark.slow
def test_gguf_snapshot_is_served_by_openvino_as_transformers_generates(tmp_path: Path) -> None:
    args = ["--threads", "1", "--cache-enabled", "false"]  # one thread: f32 compute on every CPU
    with running_daemon(tmp_path, {"gguf": tiny_llama_gguf("f16")}, args=args) as d:
        client = openai.OpenAI(base_url=d.base_url, api_key="none", timeout=120)
        for prompt in PROMPTS:
            r = client.completions.create(
                model="gguf", prompt=prompt, max_tokens=N, temperature=0, extra_body={"ignore_eos": True}
            )
            assert r.usage is not None and r.usage.completion_tokens == N
            assert r.choices[0].text == _transformers(prompt)
        row = httpx.get(d.http + "/api/ps", timeout=10).json()["models"][0]
        assert (row["engine"], row["weight_format"]) == ("openvino", "gguf")
