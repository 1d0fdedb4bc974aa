"""Sampling features through both doors of a real ``hfd serve`` on the fake engine (no torch):
n choices, logprobs with top_logprobs (chat), completions with echo + logprobs over a list of
prompts (what lm-eval sends), best_of, streamed logprobs, and the 400s OpenAI gives."""

# The openai SDK types every field Optional; these tests assert they are there.
# mypy: disable-error-code="union-attr,arg-type,index"
from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
from support.daemon import Daemon, running_daemon
from support.fake_models import fake_model

from hfd.backends.registry import FAKE_ENGINE_ENV
from hfd.client import Client


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("sampling-daemon")
    models = {"chat": fake_model(root / "models", "llama")}
    with running_daemon(root / "work", models, env={FAKE_ENGINE_ENV: "1"}) as d:
        yield d


@pytest.fixture(scope="module")
def oa(daemon: Daemon) -> openai.OpenAI:
    return daemon.openai()


def test_chat_n_3_with_logprobs(oa: openai.OpenAI) -> None:
    r = oa.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], n=3, max_tokens=4,
        temperature=0.8, seed=5, logprobs=True, top_logprobs=2,
    )  # fmt: skip
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 3  # each its own sequence
    for c in r.choices:
        assert c.logprobs is not None and len(c.logprobs.content) == 4
        assert "".join(e.token for e in c.logprobs.content) == c.message.content
        for e in c.logprobs.content:
            assert len(e.top_logprobs) == 2 and e.top_logprobs[0].token == e.token
            assert e.bytes == list(e.token.encode())
    assert r.usage.completion_tokens == 12


def test_streamed_chat_logprobs(oa: openai.OpenAI) -> None:
    stream = oa.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=3, temperature=0,
        logprobs=True, stream=True,
    )  # fmt: skip
    text: dict[int, str] = {0: "", 1: ""}
    tokens: dict[int, int] = {0: 0, 1: 0}
    finished = set()
    for chunk in stream:
        for c in chunk.choices:
            text[c.index] += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                tokens[c.index] += len(c.logprobs.content)
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1} and tokens == {0: 3, 1: 3}
    assert text[0] == text[1]  # greedy: both choices alike


def test_completions_echo_logprobs_over_a_list_of_prompts(oa: openai.OpenAI) -> None:
    # lm-eval's loglikelihood request: token-id prompts, echo, logprobs=1, max_tokens 0 or 1.
    for max_tokens in (0, 1):
        r = oa.completions.create(
            model="chat", prompt=[[70, 71, 72], [80, 81]], echo=True, logprobs=1, max_tokens=max_tokens,
            temperature=0,
        )  # fmt: skip
        assert [c.index for c in r.choices] == [0, 1]
        for c, n in zip(r.choices, (3, 2), strict=True):
            lp = c.logprobs
            assert len(lp.token_logprobs) == n + max_tokens
            assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
            assert all(isinstance(x, float) for x in lp.token_logprobs[1:])
            assert all(len(t) == 1 for t in lp.top_logprobs[1:])
        assert r.usage.completion_tokens == 2 * max_tokens
    texts = oa.completions.create(model="chat", prompt=["ab", "cd"], echo=True, max_tokens=2, temperature=0)
    assert [c.text[:2] for c in texts.choices] == ["ab", "cd"]


def test_prompt_major_n_minor_and_best_of(oa: openai.OpenAI) -> None:
    r = oa.completions.create(model="chat", prompt=["a", "b"], n=2, max_tokens=3, temperature=0.9, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    best = oa.completions.create(model="chat", prompt="a", n=2, best_of=4, max_tokens=3, temperature=0.9)
    assert [c.index for c in best.choices] == [0, 1] and all(c.logprobs is None for c in best.choices)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
        (
            {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ({"prompt": "x", "logprobs": 6}, "logprobs"),
        ({"prompt": "x", "best_of": 2, "stream": True}, "best_of"),
        ({"prompt": "x", "n": 17}, "n"),
        ({"prompt": "x", "presence_penalty": 3}, "presence_penalty"),
        ({"prompt": "x", "logit_bias": {"5": 101}}, "logit_bias"),
        ({"prompt": "x", "logit_bias": {str(10**6): 1}}, "logit_bias"),  # outside the vocabulary
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "frequency_penalty": 1.0}, "frequency_penalty"),  # the fake engine has none
        ({"prompt": "x", "suffix": "y"}, "suffix"),  # no fill-in-the-middle tokens
        ({"prompt": [5, 6], "suffix": "y"}, "suffix"),  # FIM needs text
    ],
)
def test_openai_400s(daemon: Daemon, body: dict, param: str) -> None:
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    r = httpx.post(daemon.http + path, json={"model": "chat", "max_tokens": 2, **body}, timeout=30)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_ipc_door_logprobs_and_choices(daemon: Daemon) -> None:
    with Client(daemon.ipc, timeout=60) as client:
        r = client.completions.create(
            model="chat", prompt=["ab", "cd"], echo=True, logprobs=2, max_tokens=1, temperature=0
        )
        assert [c.index for c in r.choices] == [0, 1]
        assert r.choices[0].logprobs is not None and r.choices[0].logprobs.token_logprobs[0] is None
        chat = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}], n=2, max_tokens=2, logprobs=True
        )
        assert len(chat.choices) == 2 and chat.choices[1].logprobs is not None
        assert len(chat.choices[1].logprobs.content) == 2


def test_streamed_completions_with_logprobs_and_echo(oa: openai.OpenAI) -> None:
    stream = oa.completions.create(
        model="chat", prompt=["ab", "cd"], echo=True, logprobs=1, max_tokens=2, temperature=0, stream=True
    )
    text: dict[int, str] = {0: "", 1: ""}
    values: dict[int, list] = {0: [], 1: []}
    finished = set()
    for chunk in stream:
        for c in chunk.choices:
            text[c.index] += c.text
            if c.logprobs:
                values[c.index] += c.logprobs.token_logprobs
            if c.finish_reason:
                finished.add(c.index)
    assert finished == {0, 1}
    assert text[0].startswith("ab") and text[1].startswith("cd")
    assert [len(v) for v in values.values()] == [2 + 2, 2 + 2] and values[0][0] is None
