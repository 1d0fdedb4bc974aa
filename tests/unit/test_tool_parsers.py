"""Tool-call parsers, one family at a time: the whole-text parse, and the streaming parse cut at
every character boundary, which must give the same content and the same calls."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hfd.daemon.tools.parsers import PARSERS, CallStream, Parsed, parse

WEATHER = '{"city": "Paris", "units": ["c", "f"], "note": "a \\"quoted\\" } brace"}'

# (family, text, expected content, expected [(name, arguments JSON)]).
CASES: list[tuple[str, str, str | None, list[tuple[str, dict[str, Any]]]]] = [
    (
        "hermes",
        f'Let me look.\n<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>',
        "Let me look.",
        [("get_weather", json.loads(WEATHER))],
    ),
    (
        "hermes",
        '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>\n{"arguments": {"x": 1}, "name": "b"}\n</tool_call>',
        None,
        [("a", {}), ("b", {"x": 1})],
    ),
    ("hermes", "plain text, no call <tool_c", "plain text, no call <tool_c", []),
    ("hermes", "<tool_call> not json </tool_call> tail", "<tool_call> not json </tool_call> tail", []),
    (
        "llama3",
        '{"name": "f", "parameters": {"x": 1}}; {"name": "g", "parameters": {"y": [2]}}',
        None,
        [("f", {"x": 1}), ("g", {"y": [2]})],
    ),
    ("llama3", '<|python_tag|>{"name": "f", "parameters": {"q": "hi"}}', None, [("f", {"q": "hi"})]),
    ("llama3", '{"answer": 42} is JSON but no call', '{"answer": 42} is JSON but no call', []),
    (
        "mistral",
        '[TOOL_CALLS] [{"name": "f", "arguments": {"x": 1}}, {"name": "g", "arguments": {"y": "z"}}]',
        None,
        [("f", {"x": 1}), ("g", {"y": "z"})],
    ),
    ("mistral", '[{"name": "f", "arguments": {}}]', None, [("f", {})]),  # the marker dropped by decoding
    ("mistral", "[1, 2] is a list", "[1, 2] is a list", []),
    ("json", '{"name": "f", "arguments": {"q": "hello"}}', None, [("f", {"q": "hello"})]),
    (
        "json",
        ' [{"name": "a", "arguments": {"n": 1}}, {"name": "b", "arguments": {}}]',
        None,
        [("a", {"n": 1}), ("b", {})],
    ),
    (
        "json",
        '{"name": "f", "arguments": "{\\"q\\": 1}"}',
        None,
        [("f", {"q": 1})],
    ),  # arguments as a JSON string
    ("json", "no JSON here", "no JSON here", []),
]


def _whole(parsed: Parsed) -> tuple[str | None, list[tuple[str, Any]]]:
    return parsed.content, [(c.name, json.loads(c.arguments)) for c in parsed.calls]


def _streamed(
    family: str, pieces: list[str], parallel: bool = True
) -> tuple[str | None, list[tuple[str, str]], list[dict[str, Any]]]:
    """Content and calls reassembled from the deltas, as an OpenAI client accumulates them."""
    stream = CallStream(PARSERS[family], parallel=parallel)
    deltas = [d for piece in pieces for d in stream.feed(piece)] + stream.finish()
    content = "".join(d.get("content", "") for d in deltas)
    calls: dict[int, list[str]] = {}
    for delta in deltas:
        for piece in delta.get("tool_calls", []):
            call = calls.setdefault(piece["index"], ["", ""])
            call[0] += piece["function"].get("name", "")
            call[1] += piece["function"].get("arguments", "")
    return content or None, [(n, a) for _, (n, a) in sorted(calls.items())], deltas


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_whole_text_parse(family: str, text: str, content: str | None, calls: list[tuple[str, Any]]) -> None:
    parsed = parse(PARSERS[family], text)
    assert _whole(parsed) == (content, calls)
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in parsed.calls)
    assert len({c.id for c in parsed.calls}) == len(parsed.calls)


@pytest.mark.parametrize(("family", "text", "content", "calls"), CASES)
def test_streamed_equals_whole_at_every_cut(
    family: str, text: str, content: str | None, calls: list[tuple[str, Any]]
) -> None:
    whole = parse(PARSERS[family], text)
    expected = (
        whole.content if whole.calls else whole.content or None,
        [(c.name, c.arguments) for c in whole.calls],
    )
    for cut in range(len(text) + 1):
        got = _streamed(family, [text[:cut], text[cut:]])
        assert got[:2] == expected, f"cut at {cut}"
    # One character at a time, as a model streams.
    assert _streamed(family, list(text))[:2] == expected


def test_stream_sends_name_first_then_argument_fragments() -> None:
    text = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    _, _, deltas = _streamed("hermes", list(text))
    pieces = [p for d in deltas for p in d.get("tool_calls", [])]
    first = pieces[0]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    rest = pieces[1:]
    assert len(rest) > 1 and all(
        set(p) == {"index", "function"} and set(p["function"]) == {"arguments"} for p in rest
    )
    assert "".join(p["function"]["arguments"] for p in rest) == '{"city": "Paris"}'


def test_stream_holds_back_a_possible_marker_and_releases_it() -> None:
    stream = CallStream(PARSERS["hermes"])
    assert stream.feed("Hello <tool") == [{"content": "Hello"}]  # " <tool" may open a call
    assert stream.feed("box> done") == [{"content": " <toolbox> done"}]
    assert stream.finish() == []


def test_stream_content_before_a_call_drops_its_trailing_whitespace() -> None:
    content, calls, _ = _streamed(
        "hermes", ["Sure.\n\n", '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n']
    )
    assert content == "Sure." and calls == [("f", "{}")]


def test_whitespace_only_output_stays_content() -> None:
    assert _streamed("json", ["  \n"])[0] == "  \n"
    assert parse(PARSERS["json"], "  \n").content == "  \n"


def test_parallel_false_keeps_the_first_call() -> None:
    text = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {}}</tool_call>'
    assert [c.name for c in parse(PARSERS["hermes"], text, parallel=False).calls] == ["a"]
    assert _streamed("hermes", list(text), parallel=False)[1] == [("a", "{}")]


def test_a_call_cut_by_max_tokens_is_not_a_call_of_the_whole_reply() -> None:
    text = 'ok <tool_call>{"name": "f", "arguments": {"x": 1'
    parsed = parse(PARSERS["hermes"], text)
    assert parsed.calls == [] and parsed.content == text


def test_arguments_keep_the_models_text() -> None:
    # Arguments are passed on as written (a client's json.loads sees the same value).
    args = '{ "a" : 1,"b":[ true ] }'
    (call,) = parse(PARSERS["json"], f'{{"name": "f", "arguments": {args}}}').calls
    assert call.arguments == args and call.openai()["function"] == {"name": "f", "arguments": args}
