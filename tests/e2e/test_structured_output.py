"""Structured output end to end against a real ``hfd serve`` (torch engine, the tiny random
Llama with its byte-level BPE vocabulary), with the official ``openai`` client.

The guarantee: 20 different JSON schemas, sent at once together with unconstrained requests
(so constrained and free rows share decoding steps), each give output that parses and validates;
the unconstrained rows are exactly what they are alone (greedy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jsonschema
import openai
import pydantic
import pytest
from support.daemon import Daemon, running_daemon
from support.json_schemas import SCHEMAS
from support.models import tiny_llama

pytest.importorskip("xgrammar")
pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 200}
ASK = [{"role": "user", "content": "Reply in JSON."}]
FREE = [[{"role": "user", "content": f"Tell me about item {i}."}] for i in range(6)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running_daemon(
        tmp_path_factory.mktemp("structured"), {"tiny": tiny_llama()}, args=["--engine", "torch"]
    ) as d:
        yield d


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> openai.OpenAI:
    return daemon.openai(timeout=300)


def _schema_format(i: int) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": f"s{i}", "schema": SCHEMAS[i], "strict": True}}


def _schemas_batched_with_free_text(client: openai.OpenAI) -> tuple[list[Any], list[str], list[str]]:
    """Every schema of ``SCHEMAS`` (one constrained request each, uncached) sent at once with the
    free requests of ``FREE``: the constrained choices, and the free replies as they came
    alongside them and as they come alone (one at a time, first)."""

    def free(messages: Any) -> str:
        reply = client.chat.completions.create(model="tiny", messages=messages, **GREEDY)
        return reply.choices[0].message.content or ""

    def constrained(i: int) -> Any:
        return client.chat.completions.create(
            model="tiny",
            messages=ASK,
            response_format=_schema_format(i),
            extra_body={"cache": False},
            **GREEDY,
        ).choices[0]

    alone = [free(m) for m in FREE]
    with ThreadPoolExecutor(max_workers=26) as pool:
        free_jobs = [pool.submit(free, m) for m in FREE]
        jobs = [pool.submit(constrained, i) for i in range(len(SCHEMAS))]
        choices = [j.result() for j in jobs]
        mixed = [j.result() for j in free_jobs]
    return choices, mixed, alone


def test_twenty_schemas_batched_with_free_text(client: openai.OpenAI) -> None:
    choices, mixed, alone = _schemas_batched_with_free_text(client)
    for i, choice in enumerate(choices):
        assert choice.finish_reason == "stop", (i, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), SCHEMAS[i])
    assert mixed == alone
    assert any(not _is_json(text) for text in alone)  # free text really is free


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class Point(pydantic.BaseModel):
    x: int = pydantic.Field(ge=0, le=9)
    label: str = pydantic.Field(max_length=5)


class Shape(pydantic.BaseModel):
    kind: str = pydantic.Field(pattern="^(circle|square)$")
    points: list[Point] = pydantic.Field(max_length=3)


def test_openai_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(model="tiny", messages=ASK, response_format=Shape, **GREEDY)
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, Shape)


def test_json_object_and_completions_extensions(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], response_format={"type": "json_object"},
        temperature=0, max_tokens=200,
    )  # fmt: skip
    choice = reply.choices[0]
    if choice.finish_reason == "stop":  # free-form JSON may nest past max_tokens; it is JSON when done
        assert isinstance(json.loads(choice.message.content or ""), dict)
    else:
        assert (choice.message.content or "").startswith("{")
    done = client.completions.create(
        model="tiny", prompt="Pick:", extra_body={"guided_choice": ["alpha", "beta"]}, **GREEDY
    )
    assert done.choices[0].text in ("alpha", "beta")
    regex = client.completions.create(
        model="tiny", prompt="Code:", extra_body={"guided_regex": "[A-Z]{2}[0-9]{3}"}, **GREEDY
    )
    assert len(regex.choices[0].text) == 5 and regex.choices[0].text[:2].isupper()
    stream = client.chat.completions.create(
        model="tiny", messages=ASK, response_format=_schema_format(9), stream=True, **GREEDY
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMAS[9])


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
         "response_format"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"guided_regex": "("}, "guided_regex"),
        ({"guided_regex": "a", "guided_choice": ["a"]}, "guided_choice"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object",
          "properties": {"a": {"type": "string", "enum": ["x" * 70000]}}}}}}, "response_format"),
    ],
)  # fmt: skip
def test_bad_constraints_are_400_with_param(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny", messages=ASK, extra_body=extra, **GREEDY)
    body: Any = info.value.body
    assert body["param"] == param, body


@pytest.fixture(scope="module")
def ov_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    pytest.importorskip("openvino_genai")
    workdir = tmp_path_factory.mktemp("structured-ov")
    with running_daemon(workdir, {"tiny": tiny_llama()}, args=["--engine", "openvino"]) as d:
        yield d.openai(timeout=300)


def test_openvino_schemas_batched_with_free_text(ov_client: openai.OpenAI) -> None:
    """OpenVINO GenAI compiles schemas with free whitespace, where a random model may write
    spaces until max_tokens: every reply that ends is valid, and a cut one is a valid start."""
    choices, mixed, alone = _schemas_batched_with_free_text(ov_client)
    ended = bad_escapes = 0
    for i, choice in enumerate(choices):
        text = choice.message.content or ""
        if choice.finish_reason == "stop":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                # GenAI 2026.4's JSON grammar once let a string through with an escape JSON does
                # not have (docs/engines.md); anything else that does not parse is a failure.
                assert exc.msg == "Invalid \\escape", (i, text)
                bad_escapes += 1
                continue
            jsonschema.validate(value, SCHEMAS[i])
            ended += 1
        else:
            assert text[:1] in "{[0123456789", (i, text)
    # GenAI 2026.4 compiles schemas with free whitespace (its bundled xgrammar cannot take the compact
    # grammar), and a random-weight model may pad with it until max_tokens: how many replies end
    # varies run to run (8 to 20 of 20 seen). Every one that ends validates; some must end.
    assert ended >= len(SCHEMAS) // 4 and bad_escapes <= 1
    assert mixed == alone
    with pytest.raises(openai.BadRequestError) as info:  # checked in the daemon, before the engine
        ov_client.chat.completions.create(
            model="tiny", messages=ASK, extra_body={"guided_regex": "("}, **GREEDY
        )
    assert info.value.body["param"] == "guided_regex"  # type: ignore[index]


def test_langchain_with_structured_output(daemon: Daemon) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        base_url=daemon.base_url, api_key="none", model="tiny", temperature=0, max_tokens=200, max_retries=0
    )
    structured = llm.with_structured_output(Shape, method="json_schema")
    assert isinstance(structured.invoke("A shape, please."), Shape)
