from __future__ import annotations

from typing import Any

import pytest

from hfd.backends.base import SamplingParams
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ValidationFailed
from hfd.daemon.schema import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ModelRequest,
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
def test_chat_validation_errors_are_400(body: object) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(ChatCompletionRequest, body)
    assert info.value.status == 400 and info.value.code == "validation_error"


@pytest.mark.parametrize(
    ("field", "value"), [("n", 17), ("top_logprobs", 2), ("presence_penalty", 2.5), ("best_of", 2)]
)
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


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        (ChatCompletionRequest, {**CHAT, "keep_alive": NAN}, "keep_alive"),
        (ChatCompletionRequest, {**CHAT, "keep_alive": INF}, "keep_alive"),
        (ChatCompletionRequest, {**CHAT, "temperature": NAN}, "temperature"),
        (ChatCompletionRequest, {**CHAT, "top_p": -INF}, "top_p"),
        (ChatCompletionRequest, {**CHAT, "presence_penalty": INF}, "presence_penalty"),
        (ChatCompletionRequest, {**CHAT, "frequency_penalty": NAN}, "frequency_penalty"),
        (CompletionRequest, {"model": "m", "prompt": "x", "temperature": INF}, "temperature"),
        (EmbeddingRequest, {"model": "m", "input": "x", "keep_alive": NAN}, "keep_alive"),
        (ModelRequest, {"model": "m", "keep_alive": NAN}, "keep_alive"),
        (ModelRequest, {"model": "m", "keep_alive": -INF}, "keep_alive"),
        # Unknown fields are ignored, but not a NaN inside them.
        (ChatCompletionRequest, {**CHAT, "metadata": {"x": [1, NAN]}}, "metadata.x.1"),
    ],
)
def test_non_finite_numbers_are_400_naming_the_field(kind: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(kind, body)
    assert info.value.status == 400 and info.value.param == param


@pytest.mark.parametrize("value", ["1e999s", "inf", "-inf", "nan", "1e308h", "Infinity", 10**400])
def test_keep_alive_durations_must_be_finite(value: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_keep_alive(value)
    assert info.value.status == 400 and info.value.param == "keep_alive"


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        (
            ChatCompletionRequest,
            {**CHAT, "messages": [{"role": "user", "content": "a\ud800b"}]},
            "messages.0.content",
        ),
        (
            ChatCompletionRequest,
            {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages.0.content.0.text",
        ),
        (ChatCompletionRequest, {**CHAT, "stop": ["ok", "\ud800"]}, "stop.1"),
        (ChatCompletionRequest, {**CHAT, "model": "org/\ud83d"}, "model"),
        (ChatCompletionRequest, {**CHAT, "user": "\ud800"}, "user"),
        (CompletionRequest, {"model": "m", "prompt": ["\ud800"]}, "prompt.0"),
        (EmbeddingRequest, {"model": "m", "input": ["fine", "\ud800"]}, "input.1"),
        (ModelRequest, {"model": "\ud800"}, "model"),
        (ModelRequest, {"model": "m", "keep_alive": "5\ud800m"}, "keep_alive"),
    ],
)
def test_lone_surrogates_are_400_naming_the_field(kind: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse(kind, body)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"
    assert info.value.param == param


def test_a_surrogate_pair_written_correctly_is_fine() -> None:
    req = parse(ChatCompletionRequest, {**CHAT, "messages": [{"role": "user", "content": "\U0001f600 ok"}]})
    assert req.messages[0].text() == "\U0001f600 ok"


def test_a_deeply_nested_unknown_field_does_not_exhaust_the_stack() -> None:
    deep: Any = NAN
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidRequest):
        parse(ChatCompletionRequest, {**CHAT, "extra": deep})


@pytest.mark.parametrize("seed", [-1, 2**64, -(2**70), 2**63, 2**63 - 1, 0, 42])
def test_any_integer_seed_maps_into_the_engines_range(seed: int) -> None:
    req = parse(ChatCompletionRequest, {**CHAT, "seed": seed})
    params = sampling_params(req, prompt_len=2, context=100)
    assert params.seed is not None and 0 <= params.seed < 2**63
    assert params.seed == sampling_params(parse(ChatCompletionRequest, {**CHAT, "seed": seed}), 2, 100).seed
    if 0 <= seed < 2**63:
        assert params.seed == seed  # the usual seeds are passed as sent


@pytest.mark.parametrize("seed", ["7", 1.5, True, [1]])
def test_a_seed_must_be_an_integer(seed: Any) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(ChatCompletionRequest, {**CHAT, "seed": seed})
    assert info.value.param == "seed"
