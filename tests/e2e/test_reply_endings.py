"""How replies end and are cut, against a real ``hfd serve`` with the official clients: the
Messages API names the stop sequence that ended a reply (``stop_reason: "stop_sequence"`` and
``stop_sequence``, whole and streamed, read by the ``anthropic`` SDK), and a streamed chat with
``n > 1`` and tools carries each choice's ``tool_calls`` deltas as the single-choice stream does
(reassembled by the ``openai`` SDK into the same calls as the whole reply)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from support.daemon import Daemon, running_daemon
from support.tool_models import tool_llama

pytestmark = pytest.mark.timeout(300)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY = {"temperature": 0}  # the current anthropic SDK no longer takes it as an argument


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(
        tmp_path_factory.mktemp("endings"), {"tools": tool_llama("qwen")}, args=["--engine", "torch"]
    ) as d:
        yield d


def _stop_in(text: str) -> str:
    """A short piece of ``text`` past its start, seen there first: a stop string it will meet."""
    for start in range(3, len(text) - 3):
        piece = text[start : start + 3]
        if piece.strip() and "\ufffd" not in piece and text.index(piece) == start:
            return piece
    pytest.skip(f"no usable stop string in {text!r}")


@pytest.fixture
def claude(daemon: Daemon) -> Iterator[Any]:
    with daemon.anthropic() as client:
        yield client


@pytest.fixture
def oai(daemon: Daemon) -> Iterator[Any]:
    with daemon.openai() as client:
        yield client


def test_messages_name_the_stop_sequence_that_ended_the_reply(claude: Any) -> None:
    free = claude.messages.create(model="tools", max_tokens=40, extra_body=GREEDY, messages=ASK)
    assert free.stop_reason in ("end_turn", "max_tokens") and free.stop_sequence is None
    text = "".join(b.text for b in free.content if b.type == "text")
    stop = _stop_in(text)

    cut = claude.messages.create(
        model="tools", max_tokens=40, extra_body=GREEDY, messages=ASK, stop_sequences=["never-there", stop]
    )
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)
    assert "".join(b.text for b in cut.content if b.type == "text") == text[: text.index(stop)]

    with claude.messages.stream(
        model="tools", max_tokens=40, extra_body=GREEDY, messages=ASK, stop_sequences=[stop]
    ) as stream:
        deltas = [e for e in stream if e.type == "message_delta"]
        final = stream.get_final_message()
    assert [(d.delta.stop_reason, d.delta.stop_sequence) for d in deltas] == [("stop_sequence", stop)]
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def test_streamed_n_with_tools_gives_each_choice_its_tool_calls(oai: Any) -> None:
    client = oai
    args: dict[str, Any] = {
        "model": "tools",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "n": 3,
        "temperature": 0.8,
        "seed": 11,
        "max_tokens": 120,
        "extra_body": {"cache": False},
    }
    whole = client.chat.completions.create(**args)
    calls: dict[int, dict[int, dict[str, str]]] = {}
    finish: dict[int, str] = {}
    content: dict[int, str] = {}
    for chunk in client.chat.completions.create(stream=True, **args):
        for choice in chunk.choices:
            content[choice.index] = content.get(choice.index, "") + (choice.delta.content or "")
            for d in choice.delta.tool_calls or []:
                call = calls.setdefault(choice.index, {}).setdefault(
                    d.index, {"id": "", "name": "", "arguments": ""}
                )
                call["id"] += d.id or ""
                call["name"] += (d.function.name or "") if d.function else ""
                call["arguments"] += (d.function.arguments or "") if d.function else ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert sorted(calls) == [0, 1, 2] and finish == {0: "tool_calls", 1: "tool_calls", 2: "tool_calls"}
    assert not any(content.values())  # a required call: no text beside it
    for choice in whole.choices:
        streamed = [calls[choice.index][k] for k in sorted(calls[choice.index])]
        expected = choice.message.tool_calls
        assert [(c["name"], c["arguments"]) for c in streamed] == [
            (c.function.name, c.function.arguments) for c in expected
        ]  # seeded: the same sequences streamed and not
        for c in streamed:
            assert c["id"].startswith("call_") and c["name"] == "get_weather"
            jsonschema.validate(json.loads(c["arguments"]), WEATHER["function"]["parameters"])  # type: ignore[index]
