"""daemon.structured: request fields to ConstraintSpec (canonical, one per request, bounded),
the tool-call spec's output shape, an engine without constrained decoding refused by name,
and the response cache key telling constraints apart."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.lowlevel
import jsonschema
import pytest

from hfd.backends.base import SamplingParams
from hfd.backends.constraints import ConstraintSpec
from hfd.client.errors import InvalidRequest
from hfd.daemon import cache as rcache
from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest
from hfd.daemon.structured import MAX_SPEC_BYTES, constrain, constraint_spec, tool_call_spec

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": MSG, **fields})


def test_response_format_kinds() -> None:
    assert constraint_spec(chat()) is None
    assert constraint_spec(chat(response_format={"type": "text"})) is None
    assert constraint_spec(chat(response_format={"type": "json_object"})) == ConstraintSpec("json_object")
    a = constraint_spec(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": True,
             "schema": {"type": "object", "properties": {"b": {}, "a": {}}}}})
    )  # fmt: skip
    b = constraint_spec(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "other", "strict": True,
             "schema": {"properties": {"a": {}, "b": {}}, "type": "object"}}})
    )  # fmt: skip
    assert a == b and a is not None and a.strict  # canonical: key order and the name do not matter
    loose = constraint_spec(
        chat(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}})
    )
    assert loose is not None and not loose.strict  # OpenAI's default


def test_guided_extensions_on_both_request_types() -> None:
    req = CompletionRequest.model_validate({"model": "m", "prompt": "x", "guided_choice": ["a", "b"]})
    assert constraint_spec(req) == ConstraintSpec("choice", '["a", "b"]')
    assert constraint_spec(chat(guided_regex="[0-9]+")) == ConstraintSpec("regex", "[0-9]+")
    assert constraint_spec(chat(guided_grammar='root ::= "x"')).kind == "grammar"  # type: ignore[union-attr]
    as_text = constraint_spec(chat(guided_json='{"type": "integer"}'))
    assert as_text == constraint_spec(chat(guided_json={"type": "integer"}))
    assert as_text is not None and as_text.param == "guided_json"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
        ),
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "guided_regex"),
        ({"guided_json": "{nope"}, "guided_json"),
        ({"guided_choice": []}, "guided_choice"),
        ({"guided_regex": "a" * (MAX_SPEC_BYTES + 1)}, "guided_regex"),
    ],
)
def test_bad_fields_name_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        constraint_spec(chat(**fields))
    assert info.value.param == param


def test_tool_call_spec_shape() -> None:
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties":
         {"n": {"type": "integer"}}, "required": ["n"]}}},
        {"type": "function", "function": {"name": "g"}},
    ]  # fmt: skip
    many = json.loads(tool_call_spec(tools).value)
    jsonschema.validate([{"name": "f", "arguments": {"n": 1}}, {"name": "g", "arguments": {}}], many)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"name": "f", "arguments": {}}], many)
    one = json.loads(tool_call_spec(tools, name="g", parallel=False).value)
    jsonschema.validate({"name": "g", "arguments": {}}, one)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "f", "arguments": {"n": 1}}, one)
    with pytest.raises(InvalidRequest):
        tool_call_spec(tools, name="h")


def test_an_engine_without_constraints_is_named() -> None:
    class Plain:
        name = "onnxruntime"

    async def go() -> None:
        assert await constrain(Plain(), None, SamplingParams()) == SamplingParams()
        with pytest.raises(InvalidRequest) as info:
            await constrain(Plain(), ConstraintSpec("json_object"), SamplingParams())
        assert "onnxruntime" in str(info.value) and info.value.param == "response_format"

    anyio.run(go)


def test_the_cache_key_holds_the_constraint() -> None:
    plain = rcache.request_key("chat", "id", chat())
    obj = rcache.request_key("chat", "id", chat(response_format={"type": "json_object"}))
    regex = rcache.request_key("chat", "id", chat(guided_regex="a+"))
    assert len({plain, obj, regex}) == 3


def test_compiling_leaves_the_event_loop_free() -> None:
    """A slow compile runs in a worker thread: the loop (which feeds the running batch) keeps
    going meanwhile. The compile waits until the loop has gone round many times."""
    import threading

    ticks = 0
    loop_ran = threading.Event()

    class Slow:
        name = "torch"

        def compile_constraint(self, spec: ConstraintSpec) -> object:
            assert threading.current_thread() is not threading.main_thread()
            assert loop_ran.wait(timeout=30)
            return "compiled"

    async def go() -> None:
        async def ticker() -> None:
            nonlocal ticks
            while ticks < 50:
                ticks += 1
                await anyio.lowlevel.checkpoint()
            loop_ran.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            params = await constrain(Slow(), ConstraintSpec("json_object"), SamplingParams())
        assert params.constraint == "compiled" and ticks == 50

    anyio.run(go)
