"""The Responses API on the IPC door, through ``hfd.client`` against a real ``hfd serve``: the
same responses as the HTTP door gives the ``openai`` package for the same greedy request (the
oracle), its events as stream items, ``previous_response_id`` chaining, retrieve, input items,
delete, one store for both doors, and a bad request's error code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import openai
import pytest
from support.daemon import Daemon, running_daemon
from support.models import tiny_llama

from hfd.client import AsyncClient, Client
from hfd.client.errors import InvalidRequest, NotFound, ValidationFailed

pytestmark = pytest.mark.timeout(300)

CHAT = "chat"
# Deterministic, fixed-length output: greedy, the end-of-sequence token ignored.
FIXED: dict[str, Any] = {"temperature": 0, "max_output_tokens": 6, "ignore_eos": True}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("responses-ipc")
    with running_daemon(root / "work", {CHAT: tiny_llama()}, args=["--engine", "torch"]) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[Client]:
    with Client(daemon.ipc, timeout=60) as c:
        yield c


def test_create_matches_the_http_door(client: Client, daemon: Daemon) -> None:
    mine = client.responses.create(model=CHAT, input="Say hello", instructions="Be brief.", **FIXED)
    oracle = daemon.openai().responses.create(
        model=CHAT,
        input="Say hello",
        instructions="Be brief.",
        temperature=0,
        max_output_tokens=6,
        extra_body={"ignore_eos": True},
    )
    assert mine["object"] == "response" and mine["id"].startswith("resp_") and mine["id"] != oracle.id
    assert mine["status"] == "incomplete" == oracle.status
    assert mine["incomplete_details"] == {"reason": "max_output_tokens"}
    assert mine["instructions"] == "Be brief."
    (item,) = mine["output"]
    assert item["type"] == "message" and item["role"] == "assistant"
    text = item["content"][0]["text"]
    assert text and text == oracle.output_text
    assert oracle.usage is not None
    assert mine["usage"]["input_tokens"] == oracle.usage.input_tokens
    assert mine["usage"]["output_tokens"] == 6


def test_stream_yields_the_responses_events(client: Client, daemon: Daemon) -> None:
    whole = client.responses.create(model=CHAT, input="Say hello", **FIXED)
    with client.responses.create(model=CHAT, input="Say hello", stream=True, **FIXED) as stream:
        events = list(stream)
    # The oracle: the HTTP door's SSE events for the same request, through the openai package.
    oracle = daemon.openai().responses.create(
        model=CHAT,
        input="Say hello",
        stream=True,
        temperature=0,
        max_output_tokens=6,
        extra_body={"ignore_eos": True},
    )
    assert [e["type"] for e in events] == [e.type for e in oracle]
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.incomplete"
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == whole["output"][0]["content"][0]["text"]
    final = events[-1]["response"]
    # The streamed response is stored as the whole one is.
    assert client.responses.retrieve(final["id"])["usage"] == final["usage"]


def test_chain_retrieve_items_delete(client: Client, daemon: Daemon) -> None:
    first = client.responses.create(model=CHAT, input="My name is Ada.", **FIXED)
    second = client.responses.create(
        model=CHAT, input="What is my name?", previous_response_id=first["id"], **FIXED
    )
    alone = client.responses.create(model=CHAT, input="What is my name?", **FIXED)
    # The second prompt holds the first turn (its input and its output) before its own input.
    assert second["usage"]["input_tokens"] > alone["usage"]["input_tokens"] + 6
    assert second["previous_response_id"] == first["id"]

    assert client.responses.retrieve(second["id"]) == second
    # One store for both doors: what IPC created, HTTP reads.
    assert (
        daemon.openai().responses.retrieve(second["id"]).output_text
        == second["output"][0]["content"][0]["text"]
    )
    items = client.responses.input_items(second["id"])
    assert items["object"] == "list" and [i["type"] for i in items["data"]] == ["message"]
    assert client.responses.delete(first["id"]) == {
        "id": first["id"],
        "object": "response.deleted",
        "deleted": True,
    }
    with pytest.raises(NotFound) as gone:
        client.responses.retrieve(first["id"])
    assert gone.value.param == "response_id"
    with pytest.raises(NotFound):
        client.responses.delete(first["id"])
    with pytest.raises(openai.NotFoundError):
        daemon.openai().responses.retrieve(first["id"])
    # A deleted response cannot be chained on: the HTTP door's error, code and param.
    with pytest.raises(InvalidRequest) as info:
        client.responses.create(model=CHAT, input="again", previous_response_id=first["id"], **FIXED)
    assert info.value.code == "invalid_request" and info.value.param == "previous_response_id"


def test_bad_requests_have_the_http_door_s_codes(client: Client) -> None:
    with pytest.raises(ValidationFailed) as info:
        client.responses.create(model=CHAT, input="hi", temperature=3)
    assert info.value.code == "validation_error" and info.value.param == "temperature"
    with pytest.raises(InvalidRequest) as order:
        client.responses.input_items("resp_" + "0" * 32, order="sideways")  # type: ignore[arg-type]
    assert order.value.param == "order"


def test_async_client(daemon: Daemon) -> None:
    async def main() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with AsyncClient(daemon.ipc, timeout=60) as c:
            whole = await c.responses.create(model=CHAT, input="Say hello", **FIXED)
            stream = await c.responses.create(model=CHAT, input="Say hello", stream=True, **FIXED)
            events = [e async for e in stream]
            assert (await c.responses.delete(whole["id"]))["deleted"] is True
            return whole, events

    whole, events = anyio.run(main)
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert text == whole["output"][0]["content"][0]["text"]
