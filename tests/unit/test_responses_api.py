"""The Responses API's translations: input items -> chat messages and the chat request, a chat
completion -> output items, chat chunks -> the Responses event sequence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from hfd.client.errors import InvalidRequest, ValidationFailed
from hfd.daemon.openai_responses import output, translate
from hfd.daemon.openai_responses.schema import ResponsesRequest
from hfd.daemon.schema import ChatCompletionRequest, parse


def request(**fields: Any) -> ResponsesRequest:
    return parse(ResponsesRequest, {"model": "m", "input": "hi", **fields})


def chat_of(req: ResponsesRequest, history: list[dict[str, Any]] | None = None) -> ChatCompletionRequest:
    history = history or []
    return translate.chat_request(req, [*history, *translate.input_items(req)], len(history))


def test_string_input_and_instructions_become_system_and_user_messages() -> None:
    chat = chat_of(request(instructions="Be brief.", max_output_tokens=7, temperature=0.5, top_p=0.9))
    assert [(m.role, m.text()) for m in chat.messages] == [("system", "Be brief."), ("user", "hi")]
    assert (chat.max_tokens, chat.temperature, chat.top_p) == (7, 0.5, 0.9)


def test_message_items_with_text_parts() -> None:
    req = request(
        input=[
            {"role": "developer", "content": "rules"},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "c", "annotations": []}]},
        ]
    )
    assert [(m.role, m.text()) for m in chat_of(req).messages] == [
        ("developer", "rules"),
        ("user", "ab"),
        ("assistant", "c"),
    ]


def test_function_calls_and_outputs_become_tool_calls_and_tool_messages() -> None:
    items = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "rain"}]},
    ]
    messages = translate.chat_messages(items, 0)
    assert messages[1] == {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
            },
            {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
    ]


def test_history_comes_first_and_errors_name_this_request_s_items() -> None:
    history = [{"type": "message", "role": "user", "content": "earlier"}]
    chat = chat_of(request(input="now"), history)
    assert [m.text() for m in chat.messages] == ["earlier", "now"]
    with pytest.raises(InvalidRequest) as info:
        chat_of(request(input=[{"type": "reasoning"}]), history)
    assert info.value.param == "input.0.type"


def test_tools_choice_and_text_format_translate() -> None:
    if (
        "tools" not in ChatCompletionRequest.model_fields
        or "response_format" not in ChatCompletionRequest.model_fields
    ):
        pytest.skip("the chat path has no tools or response_format field")
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    chat = chat_of(
        request(
            tools=[{"type": "function", "name": "weather", "description": "d", "parameters": params}],
            tool_choice={"type": "function", "name": "weather"},
            parallel_tool_calls=False,
            text={"format": {"type": "json_schema", "name": "out", "schema": params, "strict": True}},
        )
    )
    dumped = chat.model_dump(exclude_none=True)
    assert dumped["tools"][0]["function"] == {"name": "weather", "description": "d", "parameters": params}
    assert dumped["tool_choice"]["function"]["name"] == "weather"
    assert dumped["parallel_tool_calls"] is False
    assert dumped["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "web_search_preview"}]}, "tools.0.type"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice.type"),
        ({"background": True}, "background"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"truncation": "auto"}, "truncation"),
        ({"include": ["file_search_call.results"]}, "include"),
        ({"conversation": "conv_1"}, "conversation"),
    ],
)
def test_behaviour_changing_fields_are_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        request(**fields).check_supported()
    assert info.value.param == param and info.value.status == 400


def test_chat_path_errors_are_renamed() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(ResponsesRequest, {"model": "m", "input": "x", "max_output_tokens": 0})
    assert info.value.param == "max_output_tokens"
    err = translate.renamed(InvalidRequest("'max_tokens' too big", param="max_tokens"))
    assert err.param == "max_output_tokens" and "'max_output_tokens'" in err.message
    assert translate.responses_param("tools.0.function.name") == "tools.0.name"
    assert translate.responses_param("response_format.json_schema.schema") == "text.format.schema"


def chat_body(text: str, calls: list[dict[str, Any]] | None = None, finish: str = "stop") -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return {
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


CALL = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Paris"}'}}


def test_chat_completion_becomes_output_items() -> None:
    base = output.skeleton("resp_x", request(), None)
    resp = output.from_chat(base, chat_body("Hello"))
    assert resp["status"] == "completed" and resp["incomplete_details"] is None
    (item,) = resp["output"]
    assert item["type"] == "message" and item["content"][0] == {
        "type": "output_text",
        "text": "Hello",
        "annotations": [],
        "logprobs": [],
    }
    assert resp["usage"]["input_tokens"] == 5 and resp["usage"]["total_tokens"] == 8

    resp = output.from_chat(base, chat_body("", [CALL], "tool_calls"))
    (call,) = resp["output"]
    assert (call["type"], call["call_id"], call["name"], call["arguments"]) == (
        "function_call",
        "call_1",
        "weather",
        '{"city":"Paris"}',
    )
    cut = output.from_chat(base, chat_body("Hel", finish="length"))
    assert cut["status"] == "incomplete" and cut["incomplete_details"] == {"reason": "max_output_tokens"}


async def chunks(deltas: list[dict[str, Any]], finish: str) -> AsyncIterator[dict[str, Any]]:
    yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    for delta in deltas:
        yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    yield {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


def run_events(
    deltas: list[dict[str, Any]], finish: str = "stop"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    stored: list[dict[str, Any]] = []

    async def keep(final: dict[str, Any]) -> None:
        stored.append(final)

    async def main() -> list[dict[str, Any]]:
        events = output.Events(output.skeleton("resp_x", request(), None), keep)
        return [e async for e in events.stream(chunks(deltas, finish))]

    return anyio.run(main), stored


def test_text_stream_event_sequence() -> None:
    events, stored = run_events([{"content": "Hel"}, {"content": "lo"}])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Hello"
    final = events[-1]["response"]
    assert final == stored[0] and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["output_tokens"] == 3


def test_text_then_function_call_stream() -> None:
    deltas = [
        {"content": "Looking."},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]
    events, _ = run_events(deltas, "tool_calls")
    kinds = [e["type"] for e in events]
    assert kinds[-7:] == [
        "response.output_item.done",  # the text item closes when the call starts
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[-3]["arguments"] == '{"city":"Paris"}' and events[-3]["output_index"] == 1
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["output"][1]["call_id"] == "call_1"


def test_empty_output_still_has_a_message_and_length_is_incomplete() -> None:
    events, _ = run_events([], "length")
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""
