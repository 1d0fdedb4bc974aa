from __future__ import annotations

import pytest

from hfd.backends.base import SamplingParams
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ValidationFailed
from hfd.daemon.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse,
    parse_keep_alive,
)
from hfd.daemon.service import sampling_params

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_chat_parses_openai_shapes() -> None:
    req = parse(
        ChatCompletionRequest,
        {
            **CHAT,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ],
            "stop": ["x", "y"],
            "max_completion_tokens": 5,
            "unknown_field": 1,
        },
    )
    assert req.messages[1].text() == "ab"
    assert req.stop_list() == ("x", "y")
    assert req.token_limit() == 5


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"messages": CHAT["messages"]},
        {**CHAT, "messages": "hi"},
        {**CHAT, "messages": []},
        {**CHAT, "messages": [{"role": "robot", "content": "x"}]},
        {**CHAT, "temperature": 3},
        {**CHAT, "top_p": 0},
        {**CHAT, "max_tokens": 0},
        {**CHAT, "max_tokens": "ten"},
        {**CHAT, "stop": ["a", "b", "c", "d", "e"]},
        {**CHAT, "stop": ""},
    ],
)
def test_chat_validation_errors_are_422(body: object) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(ChatCompletionRequest, body)
    assert info.value.status == 422 and info.value.code == "validation_error"


@pytest.mark.parametrize(("field", "value"), [("n", 2), ("logprobs", True), ("presence_penalty", 0.5)])
def test_unsupported_options_are_400(field: str, value: object) -> None:
    req = parse(ChatCompletionRequest, {**CHAT, field: value})
    with pytest.raises(InvalidRequest) as info:
        req.check_supported()
    assert info.value.status == 400 and info.value.param == field


def test_completion_prompt_forms() -> None:
    assert parse(CompletionRequest, {"model": "m", "prompt": "x"}).prompt_value() == "x"
    assert parse(CompletionRequest, {"model": "m", "prompt": ["x"]}).prompt_value() == "x"
    assert parse(CompletionRequest, {"model": "m", "prompt": [1, 2]}).prompt_value() == [1, 2]
    with pytest.raises(InvalidRequest):
        parse(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}).prompt_value()


def test_embedding_inputs() -> None:
    assert parse(EmbeddingRequest, {"model": "m", "input": "a"}).texts() == ["a"]
    assert parse(EmbeddingRequest, {"model": "m", "input": ["a", "b"]}).texts() == ["a", "b"]
    for bad in ([], [""], [1, 2]):
        with pytest.raises(InvalidRequest):
            parse(EmbeddingRequest, {"model": "m", "input": bad}).texts()
    with pytest.raises(ValidationFailed):
        parse(EmbeddingRequest, {"model": "m", "input": "a", "encoding_format": "hex"})


def test_keep_alive_durations() -> None:
    assert parse_keep_alive("5m") == 300
    assert parse_keep_alive("30s") == 30
    assert parse_keep_alive("1h") == 3600
    assert parse_keep_alive(-1) == -1
    assert parse_keep_alive("0") == 0
    assert parse_keep_alive(None) is None
    with pytest.raises(ValidationFailed):
        parse_keep_alive("soon")


def test_sampling_params_and_context_limit() -> None:
    req = parse(ChatCompletionRequest, {**CHAT, "max_tokens": 10, "temperature": 0, "seed": 3, "stop": "x"})
    p = sampling_params(req, prompt_len=20, context=100)
    assert p == SamplingParams(max_tokens=10, temperature=0.0, top_p=1.0, seed=3, stop=("x",))
    assert p.greedy
    # no max_tokens: the rest of the context
    p = sampling_params(parse(ChatCompletionRequest, CHAT), prompt_len=20, context=100)
    assert p.max_tokens == 80 and p.temperature == 1.0
    with pytest.raises(ContextLengthExceeded) as info:
        sampling_params(req, prompt_len=95, context=100)
    assert "100" in info.value.message and info.value.status == 400
    with pytest.raises(ContextLengthExceeded):
        sampling_params(parse(ChatCompletionRequest, CHAT), prompt_len=100, context=100)
