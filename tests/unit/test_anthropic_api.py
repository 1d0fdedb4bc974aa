"""The Anthropic Messages API's translations: messages and blocks -> chat messages and the chat
request, a chat completion -> content blocks, chat chunks -> Anthropic's event sequence, and
errors in Anthropic's envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from hfd.client.errors import InvalidRequest, ModelNotFound, Overloaded, RateLimited
from hfd.daemon.anthropic import output, translate
from hfd.daemon.anthropic.schema import CountTokensRequest, MessagesRequest
from hfd.daemon.schema import ChatCompletionRequest, parse


def request(**fields: Any) -> MessagesRequest:
    return parse(
        MessagesRequest,
        {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}], **fields},
    )


def test_system_text_blocks_and_sampling() -> None:
    chat = translate.chat_request(
        request(
            system=[{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
            messages=[
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
            ],
            temperature=0.2,
            top_p=0.5,
            stop_sequences=["\n\n"],
            metadata={"user_id": "u1"},
        )
    )
    assert [(m.role, m.text()) for m in chat.messages] == [("system", "Be\nbrief."), ("user", "ab")]
    assert (chat.max_tokens, chat.temperature, chat.top_p, chat.stop, chat.user) == (
        8,
        0.2,
        0.5,
        ["\n\n"],
        "u1",
    )


def test_tool_use_and_tool_result_blocks() -> None:
    req = request(
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "sunny"}],
                    },
                    {"type": "text", "text": "thanks"},
                ],
            },
        ]
    )
    messages = translate.chat_messages(req)
    assert messages[1] == {
        "role": "assistant",
        "content": "Looking.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    }
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]


def test_tools_and_tool_choice() -> None:
    if "tools" not in ChatCompletionRequest.model_fields:
        pytest.skip("the chat path has no tools field")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"name": "weather", "description": "d", "input_schema": schema}]
    for choice, expected in (
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
    ):
        body = translate.chat_body(request(tools=tools, tool_choice=choice))
        assert body["tool_choice"] == expected
        assert body["tools"][0]["function"] == {"name": "weather", "description": "d", "parameters": schema}
    body = translate.chat_body(
        request(
            tools=tools, tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True}
        )
    )
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
        (  # image blocks are taken with a base64 source (for vision chat models)
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages.0.content.0.source",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages.0.content.0.type",
        ),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        ({"output_config": {"effort": "high"}}, "output_config.effort"),
    ],
)
def test_unsupported_is_400_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        translate.chat_request(request(**fields))
    assert info.value.param == param


def test_top_k_is_refused_while_the_chat_path_has_none() -> None:
    if "top_k" in ChatCompletionRequest.model_fields:
        assert translate.chat_request(request(top_k=5)).top_k == 5  # type: ignore[attr-defined]
        return
    with pytest.raises(InvalidRequest) as info:
        translate.chat_request(request(top_k=5))
    assert info.value.param == "top_k"


def test_count_request_asks_one_token_and_skips_the_cache() -> None:
    req = parse(CountTokensRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    chat = translate.count_request(req)
    assert chat.max_tokens == 1 and chat.cache is False


def test_chat_completion_becomes_content_blocks() -> None:
    chat = {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Sure.",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"x": 1}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    }
    msg = output.message("msg_1", "m", chat)
    assert msg["content"] == [
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "c1", "name": "w", "input": {"x": 1}},
    ]
    assert msg["stop_reason"] == "tool_use" and msg["usage"]["input_tokens"] == 4
    assert output.stop_reason("length") == "max_tokens" and output.stop_reason("stop") == "end_turn"


async def chunks(deltas: list[dict[str, Any]], finish: str) -> AsyncIterator[dict[str, Any]]:
    yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    for delta in deltas:
        yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    yield {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
    yield {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 3}}


def run_events(deltas: list[dict[str, Any]], finish: str) -> list[dict[str, Any]]:
    async def main() -> list[dict[str, Any]]:
        return [e async for e in output.events("msg_1", "m", 4, chunks(deltas, finish))]

    return anyio.run(main)


def test_stream_event_sequence_text_then_tool_use() -> None:
    events = run_events(
        [
            {"content": "Hi"},
            {"content": "!"},
            {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "w", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":1}'}}]},
        ],
        "tool_calls",
    )
    assert [e["type"] for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["usage"]["input_tokens"] == 4
    assert events[3]["delta"] == {"type": "text_delta", "text": "Hi"}
    assert events[6]["index"] == 1 and events[6]["content_block"]["type"] == "tool_use"
    assert events[7]["delta"] == {"type": "input_json_delta", "partial_json": '{"x":1}'}
    assert events[9]["delta"]["stop_reason"] == "tool_use" and events[9]["usage"]["output_tokens"] == 3


def test_empty_stream_has_one_empty_text_block() -> None:
    kinds = [e["type"] for e in run_events([], "length")]
    assert kinds[2:5] == ["content_block_start", "content_block_stop", "message_delta"]


def test_errors_in_anthropic_s_envelope() -> None:
    assert output.error_body(InvalidRequest("bad"), "bad") == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    assert output.error_body(ModelNotFound("x"), "x")["error"]["type"] == "not_found_error"
    assert output.error_body(RateLimited("x"), "x")["error"]["type"] == "rate_limit_error"
    assert output.error_body(Overloaded("x"), "x")["error"]["type"] == "rate_limit_error"  # 429


def test_a_matched_stop_sequence_is_named_in_the_message_and_its_stream() -> None:
    chat = {
        "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    body = output.message("msg_1", "m", chat, "\n\n")
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "\n\n")
    plain = output.message("msg_1", "m", chat)
    assert (plain["stop_reason"], plain["stop_sequence"]) == ("end_turn", None)
    capped = output.message(
        "msg_1", "m", {**chat, "choices": [{**chat["choices"][0], "finish_reason": "length"}]}
    )
    assert capped["stop_reason"] == "max_tokens"

    async def chunks() -> AsyncIterator[dict[str, Any]]:
        yield {"choices": [{"delta": {"content": "Hi"}, "finish_reason": None}]}
        yield {"choices": [{"delta": {}, "finish_reason": "stop"}]}
        yield {"choices": [], "usage": {"completion_tokens": 2}}

    async def run() -> list[dict[str, Any]]:
        return [e async for e in output.events("msg_1", "m", 3, chunks(), lambda: "END")]

    (delta,) = [e for e in anyio.run(run) if e["type"] == "message_delta"]
    assert delta["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_stop_sequences_bypass_the_response_cache() -> None:
    # A replayed reply does not keep which stop string ended it.
    assert translate.chat_request(request(stop_sequences=["END"])).cache is False
    assert translate.chat_request(request()).cache is True
