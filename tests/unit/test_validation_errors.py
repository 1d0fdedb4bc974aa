"""Validation failures answer as OpenAI does: 400 ``invalid_request_error`` with ``param``, the
dotted path of the field (union members pydantic tried are not part of it), on both doors."""

from __future__ import annotations

from typing import Any

import pytest

from hfd.client.errors import InvalidRequest, ValidationFailed, error_from_dict
from hfd.daemon.schema import ChatCompletionRequest, EmbeddingRequest, parse

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "m"}, "messages", "Missing required parameter: 'messages'"),
        ({**CHAT, "messages": [{"role": "robot"}]}, "messages.0.role", "Invalid value for 'messages.0.role'"),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages.0.content", "valid string or"),
        ({**CHAT, "temperature": 3}, "temperature", "less than or equal to 2"),
        ({**CHAT, "temperature": "hot"}, "temperature", "valid number"),
        ({**CHAT, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({**CHAT, "stop": ["", "a"]}, "stop", "stop sequences must not be empty"),
    ],
)
def test_chat_body_errors_name_the_field(body: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(ChatCompletionRequest, body)
    err = info.value
    assert (err.status, err.code, err.type, err.param) == (
        400,
        "validation_error",
        "invalid_request_error",
        param,
    )
    assert words in err.message


def test_union_members_are_not_part_of_the_param() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse(EmbeddingRequest, {"model": "m", "input": 5})
    assert info.value.param == "input"
    assert all(e["param"] == "input" for e in info.value.details["errors"])


def test_validation_failed_is_an_invalid_request_the_client_rebuilds() -> None:
    # Code that catches InvalidRequest (or the openai SDK's BadRequestError) catches it too.
    assert issubclass(ValidationFailed, InvalidRequest)
    rebuilt = error_from_dict({"code": "validation_error", "message": "x", "param": "model"})
    assert isinstance(rebuilt, ValidationFailed) and rebuilt.status == 400 and rebuilt.param == "model"
