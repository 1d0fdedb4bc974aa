"""The IPC door end to end: ``hfd.client`` (sync and async) and the client-side CLI commands
against a real ``hfd serve``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import zmq

from hfd.client import AsyncClient, Client
from hfd.client.errors import (
    ContextLengthExceeded,
    DaemonUnavailable,
    InvalidRequest,
    ModelNotFound,
    ValidationFailed,
)
from hfd.client.protocol import Request, decode_reply, encode_request
from hfd.daemon.cli import main as cli

if TYPE_CHECKING:
    from conftest import Doors

pytestmark = pytest.mark.timeout(300)

# The names the `doors` fixture serves its models under (see conftest.Doors).
CHAT, EMBED, MINILM, CONTEXT = "chat", "emb", "minilm", 256
MESSAGES = [{"role": "user", "content": "Write a short poem about the ocean."}]
FIXED = {"temperature": 0, "max_tokens": 8, "ignore_eos": True}


@pytest.fixture(scope="module")
def client(doors: Doors) -> Client:
    assert (doors.CHAT, doors.EMBED, doors.MINILM, doors.CONTEXT) == (CHAT, EMBED, MINILM, CONTEXT)
    c = Client(doors.ipc, timeout=120)
    yield c  # type: ignore[misc]
    c.close()


def test_health_and_models(client: Client) -> None:
    assert client.health()["status"] == "ok"
    assert {m.id for m in client.models.list()} == {CHAT, EMBED, MINILM}


def test_chat_streamed_and_not_give_the_same_reply(client: Client) -> None:
    full = client.chat.completions.create(model=CHAT, messages=MESSAGES, **FIXED)
    assert full.object == "chat.completion" and full.id.startswith("chatcmpl-")
    assert full.choices[0].message.role == "assistant" and full.choices[0].message.content
    assert full.choices[0].finish_reason == "length"
    assert full.usage is not None and full.usage.completion_tokens == 8
    stream = client.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True, **FIXED)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == full.choices[0].message.content
    )
    assert stream.usage == full.usage and stream.finish_reason == "length"


def test_completions(client: Client) -> None:
    full = client.completions.create(model=CHAT, prompt="Rivers flow to", **FIXED)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model=CHAT, prompt="Rivers flow to", stream=True, **FIXED)
    )
    assert full.choices[0].text and streamed == full.choices[0].text
    ids = client.completions.create(model=CHAT, prompt=[1, 40, 41, 42], max_tokens=2, ignore_eos=True)
    assert ids.usage is not None and ids.usage.prompt_tokens == 4


def test_embeddings_and_real_minilm_quality(client: Client) -> None:
    tiny = client.embeddings.create(model=EMBED, input=["hello world", "the ocean"])
    assert tiny.embeddings.shape == (2, 32) and tiny.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(tiny.embeddings, axis=1), 1.0, rtol=1e-5)
    assert tiny.usage is not None and tiny.usage.prompt_tokens > 0
    real = client.embeddings.create(
        model=MINILM,
        input=[
            "How do I bake bread at home?",
            "What is a simple recipe for homemade bread?",
            "The train leaves at nine.",
        ],
    ).embeddings
    assert real.shape == (3, 384)
    assert real[0] @ real[1] > real[0] @ real[2] + 0.2
    short = client.embeddings.create(model=MINILM, input="bread", dimensions=64)
    assert short.embeddings.shape == (1, 64)


def test_interleaved_streams_on_one_thread(client: Client) -> None:
    a = client.chat.completions.create(model=CHAT, messages=MESSAGES, stream=True, **FIXED)
    b = client.completions.create(model=CHAT, prompt="Rivers flow to", stream=True, **FIXED)
    text_b = "".join(c.choices[0].text for c in b)
    text_a = "".join(c.choices[0].delta.content or "" for c in a if c.choices)
    assert (
        text_a
        == client.chat.completions.create(model=CHAT, messages=MESSAGES, **FIXED).choices[0].message.content
    )
    assert text_b == client.completions.create(model=CHAT, prompt="Rivers flow to", **FIXED).choices[0].text


def test_errors_come_back_as_the_same_classes(client: Client) -> None:
    with pytest.raises(ModelNotFound):
        client.chat.completions.create(model="nope", messages=MESSAGES)
    with pytest.raises(ContextLengthExceeded) as long:
        client.completions.create(model=CHAT, prompt="word " * (CONTEXT + 50), max_tokens=4)
    assert long.value.param == "prompt"
    with pytest.raises(ValidationFailed) as bad:
        client.chat.completions.create(model=CHAT, messages=MESSAGES, max_tokens=0)
    assert bad.value.param == "max_tokens"
    with pytest.raises(InvalidRequest) as many:  # beyond the bound on sequences per request
        client.chat.completions.create(model=CHAT, messages=MESSAGES, n=17)
    assert many.value.param == "n"
    with pytest.raises(ModelNotFound):
        list(client.chat.completions.create(model="nope", messages=MESSAGES, stream=True))
    assert client.health()["status"] == "ok"


def test_load_ps_unload(client: Client) -> None:
    info = client.load(EMBED)
    assert info.name == EMBED and info.task == "embed" and info.engine == "torch"
    assert EMBED in {m.name for m in client.ps()}
    assert client.unload(EMBED) is True
    assert EMBED not in {m.name for m in client.ps()}
    assert client.unload(EMBED) is False
    assert "choices" in client.hardware()


def test_async_client(doors: Doors) -> None:
    async def main() -> None:
        async with AsyncClient(doors.ipc, timeout=120) as client:

            async def stream(i: int) -> str:
                s = await client.chat.completions.create(
                    model=CHAT, messages=[{"role": "user", "content": f"count to {i}"}], stream=True, **FIXED
                )
                return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

            texts = await asyncio.gather(*(stream(i) for i in range(4)))
            assert all(texts)
            emb, full = await asyncio.gather(
                client.embeddings.create(model=EMBED, input=["a", "b"]),
                client.completions.create(model=CHAT, prompt="Hello", **FIXED),
            )
            assert emb.embeddings.shape == (2, 32)
            assert full.usage is not None and full.usage.completion_tokens == 8
            with pytest.raises(ModelNotFound):
                await client.embeddings.create(model="nope", input="x")

    asyncio.run(main())


def test_closing_a_stream_cancels_its_generation(client: Client, doors: Doors) -> None:
    budget = CONTEXT - 40
    client.completions.create(model=CHAT, prompt="warm", max_tokens=1)
    before = doors.wait_idle(CHAT)
    stream = client.chat.completions.create(
        model=CHAT, messages=MESSAGES, stream=True, max_tokens=budget, ignore_eos=True, temperature=0
    )
    for c in stream:
        if c.choices and c.choices[0].delta.content:
            break
    stream.close()
    assert doors.wait_logged("request cancelled by its client")
    after = doors.wait_idle(CHAT)
    assert after["active"] == 0
    assert after["tokens_generated"] - before["tokens_generated"] < budget


def test_a_client_that_goes_away_mid_stream_stops_its_generation(doors: Doors) -> None:
    budget = CONTEXT - 40
    before = doors.wait_idle(CHAT)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(doors.ipc)
    sock.send_multipart(
        encode_request(
            Request(id="gone", op="chat.completions.create", body=doors.long_chat(MESSAGES, budget))
        )
    )
    while True:  # read until a content chunk arrives, then vanish without a word
        assert sock.poll(120_000)
        reply = decode_reply(sock.recv_multipart())
        assert reply.kind == "chunk", reply
        if reply.body["choices"] and reply.body["choices"][0]["delta"].get("content"):
            break
    sock.close(linger=0)
    ctx.term()
    # Seen as a disconnect (the socket monitor) or as a reply that cannot be delivered.
    assert doors.wait_logged("client disconnected; its requests are cancelled") or doors.logged(
        "client went away; request cancelled"
    )
    after = doors.wait_idle(CHAT)
    assert after["tokens_generated"] - before["tokens_generated"] < budget


def test_no_daemon_is_a_clear_error(tmp_path: Path) -> None:
    with Client(str(tmp_path / "nothing.sock")) as client, pytest.raises(DaemonUnavailable) as info:
        client.health()
    assert "hfd serve" in info.value.message


# ----------------------------------------------------------------------------- the CLI


def run_cli(doors: Doors, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli([*argv, "--ipc-path", doors.daemon.ipc_path.as_posix()])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_load_ps_unload(doors: Doors, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(doors, capsys, "load", EMBED)
    assert code == 0 and out.startswith(f"loaded {EMBED}: embed on torch/")
    code, out, _ = run_cli(doors, capsys, "ps")
    lines = out.splitlines()
    header = "NAME TASK ENGINE DEVICE PRECISION MEMORY ESTIMATE KV CACHE BREAKER IN USE EXPIRES"
    assert code == 0 and lines[0].split() == header.split()
    row = next(line for line in lines[1:] if line.startswith(EMBED + " "))
    assert "torch" in row and "in " in row and "closed" in row
    code, out, _ = run_cli(doors, capsys, "unload", EMBED)
    assert (code, out.strip()) == (0, f"unloaded {EMBED}")
    code, out, _ = run_cli(doors, capsys, "unload", EMBED)
    assert (code, out.strip()) == (0, f"{EMBED} was not loaded")


def test_cli_embed(doors: Doors, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(doors, capsys, "embed", "-m", EMBED, "hello world", "the ocean")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2
    assert lines[0].startswith("0: dims=32 [") and lines[1].startswith("1: dims=32 [")
    code, out, _ = run_cli(doors, capsys, "embed", "-m", EMBED, "--json", "hello world")
    data = json.loads(out)
    assert code == 0 and data["model"] == EMBED and len(data["data"][0]["embedding"]) == 32
    with Client(doors.ipc) as client:
        expected = client.embeddings.create(model=EMBED, input="hello world").embeddings[0]
    np.testing.assert_allclose(data["data"][0]["embedding"], expected, rtol=1e-6)


def test_cli_run_streams_the_reply(doors: Doors, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        doors,
        capsys,
        "run",
        CHAT,
        "Write a short poem about the ocean.",
        "--max-tokens",
        "8",
        "--temperature",
        "0",
    )
    with Client(doors.ipc) as client:
        expected = (
            client.chat.completions.create(model=CHAT, messages=MESSAGES, temperature=0, max_tokens=8)
            .choices[0]
            .message.content
        )
    assert code == 0 and out == f"{expected}\n"


def test_cli_errors_are_one_line_and_status_1(
    doors: Doors, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(doors, capsys, "run", "nope", "hi")
    assert code == 1 and err.startswith("hfd: model 'nope' is not served here") and err.count("\n") == 1
    code = cli(["ps", "--ipc-path", str(tmp_path / "none.sock")])
    err = capsys.readouterr().err
    assert code == 1 and "no daemon is listening on ipc://" in err and "hfd serve" in err
