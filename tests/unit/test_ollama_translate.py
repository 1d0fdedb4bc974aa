"""The Ollama routes' translations, without a daemon: names, options, request bodies, and a
reply with tool calls in Ollama's shape."""

from __future__ import annotations

import pytest

from hfd.client.errors import InvalidRequest
from hfd.daemon.ollama import requests as oreq
from hfd.daemon.ollama.names import to_ollama, to_ref
from hfd.daemon.ollama.options import sampling_fields
from hfd.daemon.ollama.shapes import chat_message
from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest, parse
from hfd.daemon.tools.output import ToolOutput
from hfd.daemon.tools.parsers import family


@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("org/m", "org/m"),
        ("org/m:latest", "org/m"),
        ("org/m:v2", "org/m@v2"),
        ("chat:latest", "chat"),
        ("ipfs://bafy", "ipfs://bafy"),
    ],
)
def test_names_map_both_ways(name: str, ref: str) -> None:
    assert to_ref(name, frozenset({"chat"})) == ref
    assert to_ref(to_ollama(ref), frozenset({"chat"})) == ref


def test_a_tag_and_a_revision_together_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        to_ref("org/m@main:v2")


def test_options_map_to_fields_and_runtime_tuning_is_ignored() -> None:
    fields = sampling_fields(
        {"temperature": 0.2, "num_predict": 7, "seed": 3, "stop": ["x"], "num_ctx": 8192, "num_thread": 4,
         "mirostat": 0, "typical_p": 1.0, "whatever": 1},
        ChatCompletionRequest,
    )  # fmt: skip
    assert fields == {"temperature": 0.2, "max_tokens": 7, "seed": 3, "stop": ["x"]}
    assert "max_tokens" not in sampling_fields({"num_predict": -1}, ChatCompletionRequest)
    with pytest.raises(InvalidRequest, match="mirostat"):
        sampling_fields({"mirostat": 2}, ChatCompletionRequest)


def test_format_maps_to_response_format() -> None:
    body = parse(
        oreq.ChatBody, {"model": "m", "messages": [{"role": "user", "content": "x"}], "format": "json"}
    )
    req = oreq.chat_request(body, "m")
    assert req.model_dump()["response_format"]["type"] == "json_object"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = parse(
        oreq.ChatBody, {"model": "m", "messages": [{"role": "user", "content": "x"}], "format": schema}
    )
    assert oreq.chat_request(body, "m").model_dump()["response_format"]["type"] == "json_schema"


def test_generate_is_a_chat_unless_raw() -> None:
    body = parse(oreq.GenerateBody, {"model": "m", "prompt": "p", "system": "s"})
    chat = oreq.generate_request(body, "m")
    assert isinstance(chat, ChatCompletionRequest) and [m.role for m in chat.messages] == ["system", "user"]
    raw = oreq.generate_request(parse(oreq.GenerateBody, {"model": "m", "prompt": "p", "raw": True}), "m")
    assert isinstance(raw, CompletionRequest) and raw.prompt == "p"
    templated = parse(oreq.GenerateBody, {"model": "m", "prompt": "p", "system": "s",
                                          "template": "{{ if .System }}<{{ .System }}>{{ end }}[{{ .Prompt }}]"})  # fmt: skip
    req = oreq.generate_request(templated, "m")
    assert isinstance(req, CompletionRequest) and req.prompt == "<s>[p]"


def test_tool_calls_come_back_in_ollama_s_shape() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    message = chat_message(text, ToolOutput(family("hermes"), parallel=True))
    assert message["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]
    assert chat_message("plain") == {"role": "assistant", "content": "plain"}


@pytest.mark.parametrize(
    ("value", "seconds"), [("1h30m", 5400.0), ("5m0s", 300.0), ("-1m0s", -60.0), ("5m", "5m"), (30, 30)]
)
def test_go_durations_in_keep_alive(value: object, seconds: object) -> None:
    assert oreq.keep_alive(value) == seconds  # type: ignore[arg-type]
