"""Tool calling end to end against a real ``hfd serve``, with the official ``openai`` client and
``hfd.client``: a tiny random Llama with Qwen 2.5's chat template (tools in its system prompt,
``<tool_call>`` blocks). A random model never calls a tool by itself, so the guarantees (a valid
call whose arguments validate against the schema) are tested with ``tool_choice`` required and
named, which constrained decoding enforces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from support.daemon import Daemon, running_daemon
from support.tool_models import function_tool, tool_llama

from hfd.client import Client

pytestmark = pytest.mark.timeout(300)

WEATHER = function_tool(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    },
    "The weather in a city.",
)
TIME = function_tool(
    "get_time",
    {"type": "object", "properties": {"zone": {"enum": ["utc", "cet"]}}, "required": ["zone"]},
)
TOOLS: list[Any] = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 120}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    models = {"tools": tool_llama("qwen"), "plain": tool_llama("plain")}
    with running_daemon(tmp_path_factory.mktemp("tools"), models, args=["--engine", "torch"]) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> openai.OpenAI:
    return daemon.openai()


def _constrained(client: openai.OpenAI, **kwargs: Any) -> Any:
    """A required or named call; skipped while the engine cannot enforce constraints."""
    try:
        return client.chat.completions.create(model="tools", messages=ASK, tools=TOOLS, **GREEDY, **kwargs)  # type: ignore[arg-type]
    except openai.BadRequestError as exc:
        if "does not support structured output" in str(exc):
            pytest.skip("this engine has no constrained decoding yet")
        raise


def _valid(call: Any) -> None:
    assert call.type == "function" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_auto_with_a_model_that_does_not_call_gives_its_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tools", messages=ASK, tools=TOOLS, max_tokens=16, temperature=0
    )  # type: ignore[arg-type]
    (choice,) = reply.choices
    assert choice.message.tool_calls is None
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    # The tools are in the prompt: the same chat without them is shorter.
    bare = client.chat.completions.create(model="tools", messages=ASK, max_tokens=1)  # type: ignore[arg-type]
    assert reply.usage is not None and bare.usage is not None
    assert reply.usage.prompt_tokens > bare.usage.prompt_tokens + 50


def test_required_gives_a_valid_call(client: openai.OpenAI) -> None:
    reply = _constrained(client, tool_choice="required")
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    _valid(call)


def test_named_gives_a_valid_call_of_that_function(client: openai.OpenAI) -> None:
    reply = _constrained(client, tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    _valid(call)


def test_streamed_calls_reassembled_by_the_sdk_equal_the_whole_reply(client: openai.OpenAI) -> None:
    whole = _constrained(client, tool_choice="required")
    with client.chat.completions.stream(
        model="tools",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        extra_body={"cache": False},  # generated, not replayed from the response cache
        **GREEDY,  # type: ignore[arg-type]
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    got = [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls or []]
    assert got == [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert final.choices[0].finish_reason == "tool_calls"


def test_a_cached_reply_is_read_for_calls_too(client: openai.OpenAI, daemon: Daemon) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    first = _constrained(client, tool_choice=choice)
    hits = httpx.get(daemon.http + "/api/stats", timeout=30).json()["cache"]["hits"]
    again = _constrained(client, tool_choice=choice)
    assert httpx.get(daemon.http + "/api/stats", timeout=30).json()["cache"]["hits"] == hits + 1
    assert again.choices[0].finish_reason == "tool_calls"
    calls = [(c.function.name, c.function.arguments) for c in again.choices[0].message.tool_calls]
    assert calls == [(c.function.name, c.function.arguments) for c in first.choices[0].message.tool_calls]


def test_a_tool_result_round_trip_is_accepted(client: openai.OpenAI) -> None:
    history: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "days": 1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny, 21C"},
    ]
    reply = client.chat.completions.create(model="tools", messages=history, tools=TOOLS, max_tokens=4)  # type: ignore[arg-type]
    assert reply.choices[0].message.content is not None
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_a_template_without_tools_takes_them_as_a_system_prompt(client: openai.OpenAI) -> None:
    with_tools = client.chat.completions.create(model="plain", messages=ASK, tools=TOOLS, max_tokens=1)  # type: ignore[arg-type]
    without = client.chat.completions.create(model="plain", messages=ASK, max_tokens=1)  # type: ignore[arg-type]
    assert with_tools.usage is not None and without.usage is not None
    assert with_tools.usage.prompt_tokens > without.usage.prompt_tokens + 50


def test_bad_tools_answer_400_with_the_field(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="tools",
            messages=ASK,  # type: ignore[arg-type]
            tools=TOOLS,  # type: ignore[arg-type]
            tool_choice={"type": "function", "function": {"name": "missing"}},
        )
    assert info.value.param == "tool_choice"


def test_ipc_client_reads_tool_calls(daemon: Daemon) -> None:
    with Client(daemon.ipc, timeout=120) as hfd:
        plain = hfd.chat.completions.create(
            model="tools", messages=ASK, tools=TOOLS, max_tokens=8, temperature=0
        )
        assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content
        try:
            reply = hfd.chat.completions.create(
                model="tools",
                messages=ASK,
                tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                **GREEDY,
            )
        except Exception as exc:
            if "does not support structured output" in str(exc):
                pytest.skip("this engine has no constrained decoding yet")
            raise
        (call,) = reply.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather" and reply.choices[0].finish_reason == "tool_calls"
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["get_weather"])
        pieces = [
            d
            for chunk in hfd.chat.completions.create(
                model="tools",
                messages=ASK,
                stream=True,
                tools=TOOLS,
                tool_choice={"type": "function", "function": {"name": "get_weather"}},
                **GREEDY,
            )
            for c in chunk.choices
            for d in c.delta.tool_calls or []
        ]
        assert pieces[0].id and pieces[0].name == "get_weather"
        assert "".join(p.arguments for p in pieces) == call.function.arguments


def test_langchain_bind_tools_required_gives_tool_calls(daemon: Daemon) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="tools",
        base_url=daemon.http + "/v1",
        api_key="unused",
        temperature=0,
        max_tokens=120,
        max_retries=0,
    )
    message = llm.bind_tools([WEATHER], tool_choice="required").invoke("What is the weather in Paris?")
    (call,) = message.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    jsonschema.validate(call["args"], SCHEMAS["get_weather"])
