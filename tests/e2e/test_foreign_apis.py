"""The Responses API, the Anthropic Messages API and the tokenizer endpoints end to end: the
official ``openai`` and ``anthropic`` packages (and ``hfd.client``) against a real ``hfd serve``
with the tiny Llama, plus the 400s OpenAI gives for bodies that fail validation."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from support.daemon import Daemon, running_daemon
from support.models import tiny_bert, tiny_llama

from hfd.client import Client
from hfd.client.errors import InvalidRequest

pytestmark = pytest.mark.timeout(300)

CHAT, EMBED, CONTEXT = "chat", "emb", 1024
# Deterministic, fixed-length output: greedy, the end-of-sequence token ignored.
FIXED = {"temperature": 0, "max_output_tokens": 6}
NO_EOS = {"ignore_eos": True}


def roomy_llama(root: Path) -> Path:
    """The tiny Llama with a 1024-token context (rotary positions: any length runs), so a
    prompt that renders tool definitions fits."""
    path = root / "tiny-llama-1k"
    shutil.copytree(tiny_llama(), path, symlinks=False)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("apis")
    with running_daemon(
        root / "work",
        {CHAT: roomy_llama(root), EMBED: tiny_bert()},
        args=["--engine", "torch", "--cache-enabled", "false"],
    ) as d:
        yield d


@pytest.fixture(scope="module")
def oai(daemon: Daemon) -> openai.OpenAI:
    return daemon.openai()


@pytest.fixture(scope="module")
def claude(daemon: Daemon) -> anthropic.Anthropic:
    return daemon.anthropic()


# ----------------------------------------------------------------------------- errors as OpenAI gives them


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"top_p": "high"}, "top_p"),
    ],
)
def test_chat_validation_errors_are_bad_request(
    oai: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    body: dict[str, object] = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        oai.chat.completions.create(**body)  # type: ignore[call-overload]
    assert info.value.status_code == 400
    err = info.value.body
    assert isinstance(err, dict)
    assert (
        err["type"] == "invalid_request_error" and err["code"] == "validation_error" and err["param"] == param
    )
    assert f"'{param}'" in err["message"]


def test_malformed_json_is_400(daemon: Daemon) -> None:
    r = httpx.post(daemon.http + "/v1/responses", content=b'{"model": ', timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


# ----------------------------------------------------------------------------- Responses API


def test_responses_create_streamed_and_not(oai: openai.OpenAI) -> None:
    full = oai.responses.create(
        model=CHAT, input="Say hello", instructions="Be brief.", extra_body=NO_EOS, **FIXED
    )  # type: ignore[arg-type]
    assert full.object == "response" and full.id.startswith("resp_") and full.model == CHAT
    assert full.status == "incomplete" and full.incomplete_details is not None
    assert full.incomplete_details.reason == "max_output_tokens"
    assert full.instructions == "Be brief."
    (item,) = full.output
    assert item.type == "message" and item.role == "assistant"
    assert full.output_text and full.usage is not None
    assert full.usage.output_tokens == 6 and full.usage.total_tokens == full.usage.input_tokens + 6

    events = list(
        oai.responses.create(
            model=CHAT,
            input="Say hello",
            instructions="Be brief.",
            stream=True,
            extra_body=NO_EOS,
            **FIXED,  # type: ignore[arg-type]
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == full.output_text
    last = events[-1].response  # type: ignore[union-attr]
    assert last.output_text == text and last.usage.input_tokens == full.usage.input_tokens


def test_responses_chain_retrieve_delete(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model=CHAT, input="My name is Ada.", extra_body=NO_EOS, **FIXED)  # type: ignore[arg-type]
    second = oai.responses.create(
        model=CHAT,
        input="What is my name?",
        previous_response_id=first.id,
        extra_body=NO_EOS,
        **FIXED,  # type: ignore[arg-type]
    )
    alone = oai.responses.create(model=CHAT, input="What is my name?", extra_body=NO_EOS, **FIXED)  # type: ignore[arg-type]
    assert first.usage is not None and second.usage is not None and alone.usage is not None
    # The second prompt holds the first turn (its input and its output) before its own input.
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id

    got = oai.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    items = oai.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    assert oai.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(first.id)
    # A deleted response cannot be chained on.
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=CHAT, input="again", previous_response_id=first.id, **FIXED)  # type: ignore[arg-type]
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]


def test_responses_store_false_keeps_nothing(oai: openai.OpenAI, daemon: Daemon) -> None:
    r = oai.responses.create(model=CHAT, input="hi", store=False, **FIXED)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(r.id)
    stored = daemon.workdir / "state" / "responses" / f"{r.id}.json"
    assert not stored.exists()


def test_responses_items_with_text_parts(oai: openai.OpenAI) -> None:
    r = oai.responses.create(
        model=CHAT,
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
            {"role": "user", "content": "And now?"},
        ],
        **FIXED,  # type: ignore[arg-type]
    )
    assert r.output[0].type == "message"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"tools": [{"type": "web_search"}]}, "tools.0.type"),
        ({"background": True}, "background"),
        ({"temperature": 5}, "temperature"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "input_image_call"}]}, "input.0.type"),
        (
            # An image for a text-only chat model: the chat path refuses the message's image
            # part, and chat messages are not one-to-one with input items, so it names "input".
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input",
        ),
        ({"include": ["message.output_text.logprobs"]}, "include"),
    ],
)
def test_responses_unsupported_or_invalid_is_400(
    oai: openai.OpenAI, kwargs: dict[str, object], param: str
) -> None:
    body: dict[str, object] = {"model": CHAT, "input": "hi", **kwargs}
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(**body)  # type: ignore[call-overload]
    assert info.value.body["param"] == param  # type: ignore[index]


# ----------------------------------------------------------------------------- Anthropic Messages API


def test_messages_create_and_stream(claude: anthropic.Anthropic) -> None:
    kwargs = {
        "model": CHAT,
        "max_tokens": 6,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
        # This SDK's methods have no sampling parameters; the API still takes them.
        "extra_body": {**NO_EOS, "temperature": 0},
    }
    msg = claude.messages.create(**kwargs)  # type: ignore[arg-type]
    assert msg.type == "message" and msg.role == "assistant" and msg.id.startswith("msg_")
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 6 and msg.usage.input_tokens > 0
    (block,) = msg.content
    assert block.type == "text" and block.text

    with claude.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == block.text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 6
    assert final.usage.input_tokens == msg.usage.input_tokens


def test_count_tokens_matches_the_prompt(claude: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    counted = claude.messages.count_tokens(model=CHAT, system="Be brief.", messages=messages)  # type: ignore[arg-type]
    msg = claude.messages.create(model=CHAT, max_tokens=1, system="Be brief.", messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == msg.usage.input_tokens > 0


def test_messages_accept_a_tool_definition(claude: anthropic.Anthropic) -> None:
    tool = {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
    msg = claude.messages.create(
        model=CHAT,
        max_tokens=4,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
    )
    assert msg.stop_reason in ("end_turn", "max_tokens", "tool_use")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ],
)
def test_messages_bad_request(claude: anthropic.Anthropic, kwargs: dict[str, object], param: str) -> None:
    body: dict[str, object] = {
        "model": CHAT,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "hi"}],
    }
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(**body, extra_body=kwargs)  # type: ignore[call-overload]
    err = info.value.body
    assert isinstance(err, dict) and err["type"] == "error"
    assert err["error"]["type"] == "invalid_request_error" and param in err["error"]["message"]


def test_messages_unknown_model_is_anthropic_shaped_404(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        claude.messages.create(model="nope", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


# ----------------------------------------------------------------------------- tokenizer endpoints


def test_tokenize_and_detokenize_both_shapes(daemon: Daemon) -> None:
    with httpx.Client(base_url=daemon.http, timeout=60) as http:
        vllm = http.post("/tokenize", json={"model": CHAT, "prompt": "hello world"}).json()
        assert vllm["count"] == len(vllm["tokens"]) > 0 and vllm["max_model_len"] == CONTEXT
        # llama.cpp's clients name no model: the one generation model is meant.
        llama = http.post("/tokenize", json={"content": "hello world"}).json()
        assert llama["tokens"] == vllm["tokens"]
        chat = http.post(
            "/tokenize", json={"model": CHAT, "messages": [{"role": "user", "content": "hello world"}]}
        ).json()
        assert chat["count"] > vllm["count"]  # the template's role markers
        back = http.post("/detokenize", json={"model": CHAT, "tokens": vllm["tokens"]}).json()
        assert back["prompt"] == back["content"] and "hello world" in back["prompt"]
        emb = http.post("/tokenize", json={"model": EMBED, "prompt": "hello world"}).json()
        assert emb["count"] > 0
        both = http.post("/tokenize", json={"model": CHAT, "prompt": "a", "content": "b"})
        assert both.status_code == 400 and both.json()["error"]["param"] == "content"
        neg = http.post("/detokenize", json={"model": CHAT, "tokens": [-1]})
        assert neg.status_code == 400 and neg.json()["error"]["param"] == "tokens.0"


def test_tokenize_over_ipc(daemon: Daemon) -> None:
    with Client(daemon.ipc, timeout=60) as client:
        out = client.tokenize(CHAT, "hello world")
        assert out["count"] == len(out["tokens"]) > 0
        chat = client.tokenize(CHAT, messages=[{"role": "user", "content": "hello world"}])
        assert chat["count"] > out["count"]
        assert "hello world" in client.detokenize(out["tokens"], CHAT)
        with pytest.raises(InvalidRequest):
            client.tokenize(CHAT)


def test_stored_response_file_is_json(oai: openai.OpenAI, daemon: Daemon) -> None:
    r = oai.responses.create(model=CHAT, input="hi", **FIXED)  # type: ignore[arg-type]
    path = Path(daemon.workdir) / "state" / "responses" / f"{r.id}.json"
    record = json.loads(path.read_text())
    assert record["response"]["id"] == r.id and record["input"][0]["content"] == "hi"


# ----------------------------------------------------------------------------- tools, through both APIs

# An enum keeps a random-weight model's constrained call short (a free string runs to max_tokens).
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
    "required": ["city"],
}


@pytest.mark.slow  # constrained decoding of several calls on 2 cores: about 30 s
def test_responses_function_call_round_trip(oai: openai.OpenAI) -> None:
    tools = [
        {"type": "function", "name": "weather", "description": "The weather", "parameters": WEATHER_SCHEMA}
    ]
    # A random-weight model calls no tool on its own: "required" is enforced by constrained decoding.
    first = oai.responses.create(
        model=CHAT,
        input="Weather in Paris?",
        tools=tools,
        tool_choice="required",
        max_output_tokens=64,  # type: ignore[arg-type]
    )
    calls = [i for i in first.output if i.type == "function_call"]
    assert calls and calls[0].name == "weather"
    assert "city" in json.loads(calls[0].arguments)
    second = oai.responses.create(
        model=CHAT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}],
        tools=tools,  # type: ignore[arg-type]
        max_output_tokens=4,
    )
    assert second.status in ("completed", "incomplete")

    events = list(
        oai.responses.create(
            model=CHAT,
            input="Weather?",
            tools=tools,
            tool_choice="required",
            max_output_tokens=64,
            stream=True,  # type: ignore[arg-type]
        )
    )
    kinds = [e.type for e in events]
    assert (
        "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    )
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert "city" in json.loads(done.arguments)  # type: ignore[union-attr]


@pytest.mark.slow  # constrained decoding of several calls on 2 cores: about 30 s
def test_messages_tool_use_round_trip(claude: anthropic.Anthropic) -> None:
    tools = [{"name": "weather", "description": "The weather", "input_schema": WEATHER_SCHEMA}]
    msg = claude.messages.create(
        model=CHAT,
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "tool", "name": "weather"},
    )
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert msg.stop_reason == "tool_use" and uses and uses[0].name == "weather"
    assert "city" in uses[0].input  # type: ignore[operator]
    reply = claude.messages.create(
        model=CHAT,
        max_tokens=4,
        tools=tools,  # type: ignore[arg-type]
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [u.model_dump() for u in uses]},  # type: ignore[misc]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny"}],
            },
        ],
    )
    assert reply.stop_reason in ("end_turn", "max_tokens", "tool_use")

    with claude.messages.stream(
        model=CHAT,
        max_tokens=64,
        messages=[{"role": "user", "content": "Weather?"}],
        tools=tools,  # type: ignore[arg-type]
        tool_choice={"type": "any"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert any(b.type == "tool_use" and "city" in b.input for b in final.content)  # type: ignore[operator]


# ----------------------------------------------------------------------------- structured output, through both APIs

CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.mark.slow  # constrained decoding on 2 cores
def test_structured_output_through_both_apis(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    r = oai.responses.create(
        model=CHAT,
        input="Pick a city.",
        text={"format": {"type": "json_schema", "name": "pick", "schema": CITY_SCHEMA, "strict": True}},
        max_output_tokens=32,
    )
    assert json.loads(r.output_text)["city"] in ("Paris", "Rome")
    msg = claude.messages.create(
        model=CHAT,
        max_tokens=32,
        messages=[{"role": "user", "content": "Pick a city."}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": CITY_SCHEMA}}},
    )
    assert json.loads(msg.content[0].text)["city"] in ("Paris", "Rome")  # type: ignore[union-attr]
