"""``org/name:TAG`` through a real ``hfd serve``: the local Hub-compatible server holds the tiny
Llama with two GGUF files (F16 and Q8_0). A pull by tag fetches that file alone (with the
config and tokenizer files), the Ollama listing names it by its tag; a request for the other
tag pulls and serves that one, listed under its tag by ``/v1/models``, its greedy completions
equal to transformers' on the original snapshot (F16 is exact there); a tag with no file is a
404 listing the tags the repository has."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from support.daemon import running_daemon
from support.gguf_models import tiny_llama_gguf, tiny_llama_greedy_text
from support.hub_server import HubRepo, HubServer

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
torch = pytest.importorskip("torch", reason="transformers is the oracle (hfd[torch])")
openai = pytest.importorskip("openai", reason="the openai SDK is the client")
pytestmark = pytest.mark.timeout(600)

REPO = "acme/tiny-llama-gguf"
PROMPTS = ["hello world the quick", "Paris is the capital of"]
N = 12


def _repo() -> HubRepo:
    repo = HubRepo.from_dir(REPO, tiny_llama_gguf("f16"))
    q8 = next(tiny_llama_gguf("q8_0").glob("*.gguf"))
    return HubRepo(REPO, {**repo.files, q8.name: q8.read_bytes()})


def _transformers(prompt: str) -> str:
    return tiny_llama_greedy_text(prompt, N)


@pytest.mark.slow
def test_a_tag_pulls_and_serves_one_gguf_file(tmp_path: Path) -> None:
    repo = _repo()
    gguf_names = sorted(p for p in repo.files if p.endswith(".gguf"))
    assert [n.rsplit("-", 1)[-1] for n in gguf_names] == ["F16.gguf", "Q8_0.gguf"]
    with HubServer([repo]) as hub:
        args = [
            *hub.only_source_flags(),
            "--allow-pull",
            "true",
            "--threads",
            "1",
            "--cache-enabled",
            "false",
        ]
        with (
            running_daemon(tmp_path, {}, args=args, env={"HF_HUB_OFFLINE": "0"}) as d,
            httpx.Client(base_url=d.http, timeout=240) as http,
        ):
            with http.stream("POST", "/api/pull", json={"model": f"{REPO}:q8_0"}) as r:
                assert r.status_code == 200
                events = [json.loads(line) for line in r.iter_lines() if line]
            assert events[-1]["status"] == "success", events[-1]
            fetched = " ".join(hub.requests)
            assert gguf_names[1] in fetched and gguf_names[0] not in fetched
            tags = [m["name"] for m in http.get("/api/tags").json()["models"]]
            assert tags == [f"{REPO}:Q8_0"]

            client = openai.OpenAI(base_url=d.base_url, api_key="none", timeout=240)
            for prompt in PROMPTS:
                reply = client.completions.create(
                    model=f"{REPO}:F16", prompt=prompt, max_tokens=N, temperature=0,
                    extra_body={"ignore_eos": True},
                )  # fmt: skip
                assert reply.choices[0].text == _transformers(prompt)
            assert gguf_names[0] in " ".join(hub.requests)
            ids = [m.id for m in client.models.list().data]
            assert f"{REPO}:F16" in ids
            row = http.get("/api/ps").json()["models"][0]
            assert (row["engine"], row["weight_format"]) == ("openvino", "gguf")

            with pytest.raises(openai.NotFoundError) as err:
                client.completions.create(model=f"{REPO}:Q4_K_M", prompt="x", max_tokens=1)
            message = str(err.value)
            assert "Q4_K_M" in message and "F16" in message and "Q8_0" in message
