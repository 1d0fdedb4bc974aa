"""Rendering chats with tools: an OpenAI request (tools, an assistant's tool_calls, tool replies)
goes through the engine's template exactly as transformers' own ``apply_chat_template(messages,
tools=...)`` renders the same chat in Hugging Face's form; templates with no tools get the
documented system-prompt fallback; the request rules answer 400 with the field."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from support.models import tiny_llama
from support.tool_models import function_tool, tool_llama

from hfd.backends import _hf
from hfd.client.errors import InvalidRequest
from hfd.daemon import cache as rcache
from hfd.daemon.schema import ChatCompletionRequest, parse
from hfd.daemon.tools.chat import ChatTools
from hfd.daemon.tools.render import FALLBACK_PROMPT

WEATHER = function_tool(
    "get_weather",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
    "The weather in a city.",
)
TIME = function_tool("get_time", {"type": "object", "properties": {}})

# The chat in OpenAI's form, and the same chat as transformers' templates take it.
OPENAI_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in Paris"}, {"type": "text", "text": "?"}],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "text", "text": "sunny, 21C"}]},
]
HF_CHAT: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "sunny, 21C"},
]


class Engine(_hf.PromptTokens):
    """The engines' own template code (``backends._hf.PromptTokens``) over a test tokenizer."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self._hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._tokenizer = self._hf_tokenizer.backend_tokenizer


def _model(template: str | None = None) -> Path:
    """A tiny Llama with a tool template (or its own template, with no tools): built with torch,
    rendered by transformers, the reference the tests compare with."""
    pytest.importorskip("transformers", reason="the prompts are compared with transformers' own rendering")
    return tool_llama(template) if template is not None else tiny_llama()


def _request(**fields: Any) -> ChatCompletionRequest:
    return parse(
        ChatCompletionRequest, {"model": "m", "messages": OPENAI_CHAT, "tools": [WEATHER, TIME], **fields}
    )


def _rendered(engine: Engine, req: ChatCompletionRequest) -> tuple[list[int], ChatTools]:
    chat = ChatTools(req)
    ids = chat.template_call(SimpleNamespace(model=engine, identity="test-identity"))()  # type: ignore[arg-type]
    return ids, chat


def _expected(
    engine: Engine, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[int]:
    text = engine._hf_tokenizer.apply_chat_template(
        messages, tools=tools, tokenize=False, add_generation_prompt=True
    )
    return list(engine._tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize(
    ("template", "parser"), [("qwen", "hermes"), ("llama31", "llama3"), ("mistral", "mistral")]
)
def test_tools_and_history_render_as_transformers_does(template: str, parser: str) -> None:
    engine = Engine(_model(template))
    chat = (
        OPENAI_CHAT if template != "llama31" else OPENAI_CHAT[:2]
    )  # Llama 3.1 puts tools in the first user turn
    hf = HF_CHAT if template != "llama31" else HF_CHAT[:2]
    req = parse(ChatCompletionRequest, {"model": "m", "messages": chat, "tools": [WEATHER, TIME]})
    ids, tools = _rendered(engine, req)
    assert ids == _expected(engine, hf, [WEATHER, TIME])
    output = tools.output()
    assert output is not None and output.family.name == parser


def test_qwen_prompt_shows_the_tools_and_the_history() -> None:
    engine = Engine(_model("qwen"))
    ids, _ = _rendered(engine, _request())
    text = engine._tokenizer.decode(ids, skip_special_tokens=False)
    assert '"name": "get_weather"' in text and "<tools>" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<tool_response>\nsunny, 21C\n</tool_response>" in text


def test_tool_choice_none_renders_without_tools() -> None:
    engine = Engine(_model("qwen"))
    ids, chat = _rendered(engine, _request(tool_choice="none"))
    assert ids == _expected(engine, HF_CHAT, None)
    assert chat.output() is None  # plain text: no parser


def test_required_and_named_read_plain_json() -> None:
    engine = Engine(_model("qwen"))
    for choice in ("required", {"type": "function", "function": {"name": "get_time"}}):
        _, chat = _rendered(engine, _request(tool_choice=choice))
        output = chat.output()
        assert output is not None and output.family.name == "json" and not output.parallel
    # One call (an object, not a list), of the named function or of any of the tools.
    named = ChatTools(_request(tool_choice={"type": "function", "function": {"name": "get_time"}}))
    assert json.loads(named.plan.spec().value)["properties"]["name"] == {"const": "get_time"}
    required = json.loads(ChatTools(_request(tool_choice="required")).plan.spec().value)
    assert [o["properties"]["name"] for o in required["anyOf"]] == [
        {"const": "get_weather"},
        {"const": "get_time"},
    ]


def test_a_template_without_tools_gets_the_system_prompt_fallback() -> None:
    engine = Engine(_model())  # "<|role|>" template, no tools
    ids, chat = _rendered(engine, _request())
    text = engine._tokenizer.decode(ids, skip_special_tokens=False)
    prompt = FALLBACK_PROMPT.format(tools="\n".join(json.dumps(t) for t in [WEATHER, TIME]))
    assert f"You are terse.\n\n{prompt}" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert "<|user|>\n<tool_response>\nsunny, 21C\n</tool_response>" in text
    output = chat.output()
    assert output is not None and output.family.name == "hermes"


def test_config_override_picks_the_parser() -> None:
    engine = Engine(_model("qwen"))
    chat = ChatTools(_request(), override="llama3")
    chat.template_call(SimpleNamespace(model=engine, identity="x"))  # type: ignore[arg-type]
    output = chat.output()
    assert output is not None and output.family.name == "llama3"
    with pytest.raises(InvalidRequest) as info:
        ChatTools(_request(), override="nope")
    assert info.value.param == "tool_parser"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "function", "function": {"name": "x" * 65}}]}, "tools[0].function.name"),
        ({"tools": [TIME] * 2}, "tools[1].function.name"),
        ({"tools": [{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools[0].function.parameters",
        ),
        (
            {"tools": [TIME], "tool_choice": {"type": "function", "function": {"name": "other"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
    ],
)
def test_bad_tool_requests_answer_400_with_the_field(fields: dict[str, Any], param: str) -> None:
    req = parse(
        ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    )
    with pytest.raises(InvalidRequest) as info:
        ChatTools(req)
    assert info.value.param == param and info.value.status == 400


def test_tools_are_part_of_the_response_cache_key() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    keys = {
        rcache.request_key("chat", "id", parse(ChatCompletionRequest, body))
        for body in (
            base,
            {**base, "tools": [WEATHER]},
            {**base, "tools": [TIME]},
            {**base, "tools": [WEATHER], "tool_choice": "required"},
            {**base, "tools": [WEATHER], "parallel_tool_calls": False},
        )
    }
    assert len(keys) == 5


@pytest.mark.parametrize(("value", "parallel"), [(None, True), (True, True), (False, False)])
def test_parallel_tool_calls_reaches_the_parser(value: bool | None, parallel: bool) -> None:
    engine = Engine(_model("qwen"))
    _, chat = _rendered(engine, _request(parallel_tool_calls=value))
    output = chat.output()
    assert output is not None and output.parallel is parallel
