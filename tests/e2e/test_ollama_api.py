"""Ollama's API on a real ``hfd serve`` (fake engine), driven by the official ``ollama`` Python
package: chat (whole and streamed), generate, embed, list, show, ps, pull with progress from a
local Hub, copy, delete and version; and Ollama's error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import pytest
from support.daemon import Daemon, start_daemon
from support.fake_models import fake_model
from support.hub_server import HubRepo, HubServer

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.client import Client

PULLED = "acme/tiny-llama"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    model = fake_model(tmp_path_factory.mktemp("hub-models"), "llama", "tiny-llama")
    with HubServer([HubRepo.from_dir(PULLED, model)]) as server:
        yield server


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, hub: HubServer) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("ollama-daemon")
    models = {"chat": fake_model(root / "models", "llama"), "emb": fake_model(root / "models", "bert")}
    args = [
        *hub.only_source_flags(),
        "--allow-pull", "true",
    ]  # fmt: skip
    d = start_daemon(root / "work", models, args=args, env={FAKE_ENGINE_ENV: "1", "HF_HUB_OFFLINE": "0"})
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def client(daemon: Daemon) -> ollama.Client:
    return ollama.Client(host=daemon.http, timeout=60)


def test_chat_whole_and_streamed_agree(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "hello"}]
    options = {"temperature": 0, "num_predict": 6, "num_ctx": 4096}  # num_ctx: runtime tuning, ignored
    whole = client.chat(model="chat:latest", messages=messages, options=options, stream=False)
    assert whole.done and whole.done_reason == "length"
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count == 6 and whole.prompt_eval_count and whole.prompt_eval_count > 0
    assert whole.total_duration and whole.total_duration >= (whole.eval_duration or 0)
    assert whole.model == "chat:latest" and whole.created_at

    parts = list(client.chat(model="chat", messages=messages, options=options, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].eval_count == 6


def test_a_body_without_stream_is_streamed_as_ollama_does(daemon: Daemon) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "options": {"num_predict": 3}}
    with httpx.stream("POST", daemon.http + "/api/chat", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) >= 2 and lines[-1]["done"] is True and lines[-1]["eval_count"] == 3


def test_generate_templated_and_raw(client: ollama.Client) -> None:
    options = {"temperature": 0, "num_predict": 4}
    out = client.generate(
        model="chat", prompt="why is the sky blue?", system="be brief", options=options, stream=True
    )
    text = "".join(p.response or "" for p in out)
    assert text
    raw = client.generate(model="chat", prompt="why", raw=True, options=options, stream=False)
    assert raw.done and raw.response and raw.eval_count == 4
    # The raw prompt is not wrapped in the chat template: it is a different model input.
    assert (
        raw.prompt_eval_count
        != client.generate(model="chat", prompt="why", options=options, stream=False).prompt_eval_count
    )


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    out = client.embed(model="emb", input=["a b", "c"])
    assert [len(v) for v in out.embeddings] == [8, 8] and out.prompt_eval_count
    one = client.embed(model="emb", input="a b", dimensions=4)
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 4
    legacy = client.embeddings(model="emb", prompt="a b")
    assert list(legacy.embedding) == pytest.approx(list(out.embeddings[0]))


def test_list_show_and_ps(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert {"chat:latest", "emb:latest"} <= names
    entry = next(m for m in client.list().models if m.model == "chat:latest")
    assert entry.details is not None and entry.details.family == "llama"
    assert entry.details.format == "safetensors" and entry.size and entry.digest

    shown = client.show("chat")
    assert shown.capabilities == ["completion"]
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert client.show("emb").capabilities == ["embedding"]

    client.chat(
        model="chat", messages=[{"role": "user", "content": "x"}], options={"num_predict": 1}, stream=False
    )
    loaded = {m.model: m for m in client.ps().models}
    assert "chat:latest" in loaded and loaded["chat:latest"].details.family == "llama"  # type: ignore[union-attr]


def test_ps_keeps_hfd_s_fields_for_hfd_s_client(daemon: Daemon, client: ollama.Client) -> None:
    client.chat(
        model="chat", messages=[{"role": "user", "content": "x"}], options={"num_predict": 1}, stream=False
    )
    body = httpx.get(daemon.http + "/api/ps", timeout=30).json()
    row = next(m for m in body["models"] if m["name"] == "chat")
    assert row["engine"] == "fake" and "scheduler" in row and row["model"] == "chat:latest"
    assert row["expires_at"] is None or row["expires_at"].endswith("Z")
    with Client(daemon.ipc, timeout=30) as hfd:
        chat = next(m for m in hfd.ps() if m.name == "chat")
    assert chat.model == "chat:latest" and chat.details["family"] == "llama" and chat.digest


def test_pull_with_progress_then_chat_copy_and_delete(client: ollama.Client, daemon: Daemon) -> None:
    events = list(client.pull(f"{PULLED}:latest", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    downloads = [e for e in events if (e.status or "").startswith("downloading")]
    assert downloads and all(e.digest and e.total for e in downloads)
    # Small files go in one chunk: the byte count reaches the total by the last event.
    assert max(e.completed or 0 for e in events) == downloads[-1].total
    assert f"{PULLED}:latest" in {m.model for m in client.list().models}

    reply = client.chat(model=f"{PULLED}:latest", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert reply.message.content

    client.copy(f"{PULLED}:latest", "mine")
    assert "mine:latest" in {m.model for m in client.list().models}
    assert client.chat(
        model="mine", messages=[{"role": "user", "content": "hi"}], stream=False
    ).message.content
    client.delete("mine")  # only the copy goes
    assert "mine:latest" not in {m.model for m in client.list().models}

    client.delete(PULLED)
    assert f"{PULLED}:latest" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as info:
        client.show(PULLED)
    assert info.value.status_code == 404


def test_pull_not_streamed(client: ollama.Client) -> None:
    done = client.pull(PULLED, stream=False)
    assert done.status == "success"
    client.delete(PULLED)


def test_version(daemon: Daemon) -> None:
    body = httpx.get(daemon.http + "/api/version", timeout=30).json()
    assert body["version"] and "protocol" in body


def test_errors_in_ollama_s_shape(daemon: Daemon, client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}], stream=False)
    assert info.value.status_code == 404
    r = httpx.post(daemon.http + "/api/chat", json={"model": "chat", "messages": "x"}, timeout=30)
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    images = {"role": "user", "content": "x", "images": ["aGk="]}
    r = httpx.post(daemon.http + "/api/chat", json={"model": "chat", "messages": [images]}, timeout=30)
    assert r.status_code == 400 and "vision" in r.json()["error"]
    r = httpx.post(
        daemon.http + "/api/generate",
        json={"model": "chat", "prompt": "x", "options": {"mirostat": 2}},
        timeout=30,
    )
    assert r.status_code == 400 and "mirostat" in r.json()["error"]


def test_empty_chat_loads_and_keep_alive_zero_unloads(daemon: Daemon, client: ollama.Client) -> None:
    loaded = client.chat(model="emb", messages=[], stream=False)
    assert loaded.done_reason == "load"
    assert "emb" in {m["name"] for m in httpx.get(daemon.http + "/api/ps", timeout=30).json()["models"]}
    gone = client.chat(model="emb", messages=[], keep_alive=0, stream=False)
    assert gone.done_reason == "unload"
    assert "emb" not in {m["name"] for m in httpx.get(daemon.http + "/api/ps", timeout=30).json()["models"]}


def test_alias_table_is_written_atomically(tmp_path: Path) -> None:
    from hfd.daemon.ollama.names import Aliases

    table = Aliases(tmp_path)
    table.set("mine:latest", "acme/x")
    assert table.get("mine") == table.get("mine:latest") == "acme/x"
    assert [p.name for p in tmp_path.iterdir()] == [table.path.name]  # no temporary file left behind
    assert table.remove("mine") and table.get("mine") is None


def test_tools_pass_through_to_the_chat_request(client: ollama.Client) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    reply = client.chat(
        model="chat", messages=messages, tools=[tool], options={"num_predict": 4}, stream=False
    )
    assert reply.done and reply.message.role == "assistant"
    parts = list(
        client.chat(
            model="chat", messages=messages[:1], tools=[tool], options={"num_predict": 4}, stream=True
        )
    )
    assert parts[-1].done and len(parts) == 2  # with tools, the reply comes whole, then the end


BAD_BODIES = [
    b"", b"[]", b"{}", b'{"model": 1}', b'{"model": "chat", "messages": [{"role": 1}]}',
    b'{"model": "chat", "options": [1]}', b'{"model": "chat", "messages": [], "keep_alive": "nan"}',
    b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "format": 3}',
    b'{"model": "../../etc"}', b'{"source": "chat", "destination": "  "}', b'{"model": "emb", "input": [""]}',
    b'{"model": "chat", "prompt": "x", "template": "{{ .Foo }}"}', b'{"model": "x@a:b"}', b"\xff\xfe",
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/chat"), ("POST", "/api/generate"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
     ("POST", "/api/show"), ("DELETE", "/api/delete"), ("POST", "/api/copy")],
)  # fmt: skip
def test_bad_bodies_are_refused_in_ollama_s_shape(daemon: Daemon, method: str, path: str) -> None:
    with httpx.Client(base_url=daemon.http, timeout=30) as http:
        for body in BAD_BODIES:
            r = http.request(method, path, content=body)
            # Some bodies are good on some routes (an empty chat of "emb" loads it): never a 5xx,
            # and every refusal in Ollama's shape.
            assert r.status_code < 500, (body, r.status_code, r.text)
            if r.status_code >= 400:
                assert isinstance(r.json()["error"], str), (body, r.text)
