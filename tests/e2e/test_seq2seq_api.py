"""Seq2seq models (tiny T5, BART, Marian) through a real ``hfd serve``: completions and chat,
streamed and not, with the official ``openai`` client on HTTP and ``hfd.client`` on IPC. Greedy
replies are compared with transformers' ``generate`` (num_beams=1, do_sample=False) on the same
files and inputs; what a seq2seq model cannot honour is a 400 naming the parameter."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import cache, partial
from typing import Any

import openai
import pytest
from support.daemon import Daemon
from support.daemon_fixtures import module_daemon
from support.seq2seq_models import FAMILIES, seq2seq_model

from hfd.client import Client

pytest.importorskip("torch", reason="the seq2seq engine runs on torch")
pytest.importorskip("transformers", reason="transformers' generate is the oracle")

MAX = 16
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": MAX}
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello",
    "What is the capital of France? Paris is the capital of France. How many legs does a spider have?",
    "Rivers flow to the sea",
]


daemon = module_daemon({f: partial(seq2seq_model, f) for f in FAMILIES}, workdir="seq2seq")


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Any:
    return daemon.openai()


@cache
def _hf(family: str) -> tuple[Any, Any]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    path = seq2seq_model(family)
    return AutoTokenizer.from_pretrained(path), AutoModelForSeq2SeqLM.from_pretrained(path).eval()


def oracle(family: str, text: str) -> tuple[str, int, int]:
    """(reply text, prompt tokens, completion tokens) of transformers' greedy generate."""
    tok, model = _hf(family)
    enc = tok(text, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=MAX, do_sample=False, num_beams=1)[0, 1:].tolist()
    if tok.eos_token_id in out:
        out = out[: out.index(tok.eos_token_id) + 1]
    return tok.decode(out, skip_special_tokens=True), int(enc.input_ids.shape[1]), len(out)


def test_models_list_the_seq2seq_task(client: Any) -> None:
    tasks = {m.id: m.model_extra.get("task") for m in client.models.list().data}
    assert all(tasks[f] == "seq2seq" for f in FAMILIES), tasks


@pytest.mark.parametrize("family", FAMILIES)
def test_completions_equal_generate_streamed_and_not(client: Any, family: str) -> None:
    for text in TEXTS[:2]:
        want, prompt_tokens, completion_tokens = oracle(family, text)
        reply = client.completions.create(model=family, prompt=text, **GREEDY)
        assert reply.choices[0].text == want
        assert reply.usage.prompt_tokens == prompt_tokens
        assert reply.usage.completion_tokens == completion_tokens
        assert reply.choices[0].finish_reason == ("stop" if completion_tokens < MAX else "length")
        chunks = list(
            client.completions.create(
                model=family, prompt=text, stream=True, stream_options={"include_usage": True}, **GREEDY
            )
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices) == want
        assert chunks[-1].usage.completion_tokens == completion_tokens


def test_chat_is_the_last_user_message_without_a_template(client: Any) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "an earlier question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": TEXTS[0]},
    ]
    want = oracle("t5", TEXTS[0])[0]
    reply = client.chat.completions.create(model="t5", messages=messages, **GREEDY)
    assert reply.choices[0].message.content == want
    stream = client.chat.completions.create(model="t5", messages=messages, stream=True, **GREEDY)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want


def test_chat_renders_the_tokenizers_template(client: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXTS[3]}]
    rendered = "".join(f"{m['role']}: {m['content']}\n" for m in messages)  # BART_CHAT_TEMPLATE
    want = oracle("bart", rendered)[0]
    reply = client.chat.completions.create(model="bart", messages=messages, **GREEDY)
    assert reply.choices[0].message.content == want
    stream = client.chat.completions.create(model="bart", messages=messages, stream=True, **GREEDY)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want


def test_concurrent_requests_of_different_lengths_equal_one_at_a_time(client: Any) -> None:
    jobs = [(f, t) for f in ("bart", "marian") for t in TEXTS] * 2
    no_cache = {"extra_body": {"cache": False}}

    def run(job: tuple[str, str]) -> str:
        reply = client.completions.create(model=job[0], prompt=job[1], **GREEDY, **no_cache)
        return str(reply.choices[0].text)

    with ThreadPoolExecutor(len(jobs)) as pool:
        got = list(pool.map(run, jobs))
    assert got == [oracle(f, t)[0] for f, t in jobs]


def test_stop_strings_and_several_choices(client: Any) -> None:
    want = oracle("bart", TEXTS[0])[0]
    cut = want[len(want) // 2 :][:3]
    reply = client.completions.create(model="bart", prompt=TEXTS[0], stop=[cut], **GREEDY)
    assert reply.choices[0].text == want[: want.index(cut)]
    assert reply.choices[0].finish_reason == "stop"
    two = client.completions.create(model="bart", prompt=TEXTS[0], n=2, **GREEDY)
    assert [c.text for c in two.choices] == [want, want]
    with_logprobs = client.completions.create(model="bart", prompt=TEXTS[0], logprobs=2, **GREEDY)
    assert with_logprobs.choices[0].text == want
    assert len(with_logprobs.choices[0].logprobs.tokens) == with_logprobs.usage.completion_tokens


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
            "tools",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"max_tokens": 100_000}, "max_tokens"),
    ],
)
def test_what_seq2seq_cannot_honour_is_a_400(client: Any, call: dict[str, Any], param: str) -> None:
    body = {"model": "t5", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, **call}
    body.setdefault("max_tokens", 4)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(**body)
    assert info.value.body["param"] == param, info.value.body


def test_bad_completions_are_400s(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="marian", prompt="hello " * 400, max_tokens=4)
    assert info.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="marian", prompt="hello", echo=True, logprobs=1, max_tokens=4)
    assert info.value.body["param"] == "echo"


def test_ipc_door_serves_completions_and_chat(daemon: Daemon) -> None:
    want = oracle("marian", TEXTS[1])[0]
    with Client(daemon.ipc, timeout=120) as c:
        full = c.completions.create(model="marian", prompt=TEXTS[1], **GREEDY)
        assert full.choices[0].text == want
        stream = c.chat.completions.create(
            model="marian", messages=[{"role": "user", "content": TEXTS[1]}], stream=True, **GREEDY
        )
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == want
