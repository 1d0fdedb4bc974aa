"""Property-based fuzzing of every HTTP route's body against a real ``hfd serve`` on a real
socket (tiny models, torch): JSON of random shape, random types in the known fields, huge
numbers, NaN/Infinity literals, lone surrogates, deep nesting, bytes that are no JSON at all.

Whatever arrives, the door answers below 500 in the error envelope; afterwards a normal request
still succeeds and the in-flight gauge is back to zero. Bounded (``max_examples``, no
deadline) so the file takes about a minute on a 2-core box.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.daemon import Daemon, running_daemon
from support.models import tiny_bert, tiny_llama

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

FUZZ = settings(
    max_examples=80,
    deadline=None,
    database=None,  # a failure prints its example; nothing is written into the checkout
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)

# -------------------------------------------------------------------------------- strategies

# Every code point, lone surrogates included (json.dumps writes them as \ud800 escapes).
any_text = st.text(st.characters(codec=None, categories=None), max_size=40)
huge_int = st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**400, -1, 0])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_int
    | st.floats()  # NaN and +-Infinity included: json.dumps writes the literals
    | any_text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
model = st.sampled_from(["chat", "emb", "nope", "org/nope", "", "/etc", "../../x", "ipfs://bafy"]) | values
small_tokens = st.integers(min_value=-2, max_value=3)  # generation stays short
keep_alive = st.sampled_from(["5m", "-1", "1e999s", "NaNs", "0", "abc", ""]) | st.floats() | values
message = st.fixed_dictionaries(
    {},
    optional={
        "role": st.sampled_from(["user", "system", "assistant", "tool", "nobody"]) | values,
        "content": any_text
        | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": any_text}))
        | values,
        "name": values,
    },
)
# Required: a model (often a served one) and a short max_tokens, so generation stays short.
sampling = {
    "temperature": st.floats() | values,
    "top_p": st.floats() | values,
    "seed": huge_int | st.integers() | values,
    "stop": any_text | st.lists(any_text, max_size=6) | values,
    "n": st.integers(min_value=-1, max_value=3) | values,
    "stream": st.booleans() | values,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | values}) | values,
    "ignore_eos": st.booleans() | values,
    "min_tokens": small_tokens | values,
    "keep_alive": keep_alive,
    "cache": st.booleans() | values,
    "user": values,
    "logprobs": values,
    "presence_penalty": st.floats() | values,
}
chat_body = st.fixed_dictionaries(
    {"model": model, "max_tokens": small_tokens},
    optional={
        **sampling,
        "messages": st.lists(message, max_size=3) | values,
        "max_completion_tokens": values,
    },
)
completion_body = st.fixed_dictionaries(
    {"model": model, "max_tokens": small_tokens},
    optional={
        **sampling,
        "prompt": any_text | st.lists(any_text, max_size=3) | st.lists(st.integers(), max_size=5) | values,
        "echo": values,
        "suffix": values,
    },
)
embedding_body = st.fixed_dictionaries(
    {"model": model},
    optional={
        "input": any_text
        | st.lists(any_text, max_size=5)
        | st.lists(st.integers(), max_size=5)
        | st.lists(st.lists(st.integers(), max_size=4), max_size=3)
        | values,
        "encoding_format": st.sampled_from(["float", "base64", "int8"]) | values,
        "dimensions": st.integers() | values,
        "keep_alive": keep_alive,
        "cache": values,
        "user": values,
    },
)
model_body = st.fixed_dictionaries({}, optional={"model": model, "keep_alive": keep_alive})
pull_body = st.fixed_dictionaries({}, optional={"model": model, "stream": st.booleans() | values})
# Bodies that are no JSON object: random JSON, JSON with literals json.loads takes
# (NaN, Infinity, 1e999), deep nesting, and bytes.
literal = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1" * 5000, b'"\\ud800"'])
raw_body = (
    values.map(lambda v: json.dumps(v).encode())
    | literal.map(lambda lit: b'{"model": "emb", "input": ' + lit + b', "keep_alive": ' + lit + b"}")
    | literal.map(
        lambda lit: (
            b'{"model": "chat", "max_tokens": 2, "messages": [{"role": "user", "content": ' + lit + b"}]}"
        )
    )
    | st.integers(min_value=1, max_value=60_000).map(lambda n: b"[" * n)
    | st.integers(min_value=1, max_value=3_000).map(lambda n: b'{"model":' * n)
    | st.binary(max_size=200)
)

# -------------------------------------------------------------------------------- the daemon


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    args = ["--engine", "torch", "--http-max-body-bytes", str(256 * 1024), "--hub-offline", "true"]
    args += ["--ipfs-enabled", "false", "--cache-enabled", "false"]
    with running_daemon(
        tmp_path_factory.mktemp("fuzz"), {"chat": tiny_llama(), "emb": tiny_bert()}, args=args
    ) as d:
        yield d


def encode(body: Any) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def check(r: httpx.Response) -> None:
    text = r.text
    assert r.status_code < 500, f"{r.status_code}: {text[:500]}"
    if r.status_code >= 400 and r.status_code != 499:
        error = json.loads(text)["error"]
        assert {"message", "type", "code"} <= set(error)
    if r.headers.get("content-type", "").startswith("text/event-stream"):
        for line in text.splitlines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                assert event.get("error", {}).get("type") != "server_error", line


def post(http: httpx.Client, path: str, body: bytes) -> None:
    check(http.post(path, content=body, headers={"content-type": "application/json"}))


# -------------------------------------------------------------------------------- the routes


@FUZZ
@given(body=chat_body)
def test_chat_completions(http: httpx.Client, body: dict[str, Any]) -> None:
    post(http, "/v1/chat/completions", encode(body))


@FUZZ
@given(body=completion_body)
def test_completions(http: httpx.Client, body: dict[str, Any]) -> None:
    post(http, "/v1/completions", encode(body))


@FUZZ
@given(body=embedding_body)
def test_embeddings(http: httpx.Client, body: dict[str, Any]) -> None:
    post(http, "/v1/embeddings", encode(body))


@settings(FUZZ, max_examples=40)
@given(path=st.sampled_from(["/api/load", "/api/unload"]), body=model_body)
def test_load_and_unload(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    post(http, path, encode(body))


@settings(FUZZ, max_examples=30)
@given(body=pull_body)
def test_pull(http: httpx.Client, body: dict[str, Any]) -> None:
    post(http, "/api/pull", encode(body))


@settings(FUZZ, max_examples=80)
@given(
    path=st.sampled_from(
        ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/load", "/api/unload", "/api/pull"]
    ),
    body=raw_body,
)
def test_any_bytes_on_any_route(http: httpx.Client, path: str, body: bytes) -> None:
    post(http, path, body)


@settings(FUZZ, max_examples=30)
@given(name=any_text)
def test_model_paths(http: httpx.Client, name: str) -> None:
    check(http.get("/v1/models/" + quote(name.encode("utf-8", "surrogatepass"), safe="/")))


def test_the_daemon_still_serves_and_holds_nothing_afterwards(daemon: Daemon, http: httpx.Client) -> None:
    r = http.post("/v1/embeddings", json={"model": "emb", "input": ["still here", "and well"]})
    assert r.status_code == 200, r.text
    assert all(math.isfinite(x) for x in r.json()["data"][0]["embedding"])
    r = http.post(
        "/v1/chat/completions",
        json={"model": "chat", "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30
    while True:  # streams the fuzz left behind finish on their own
        gauge = [
            line
            for line in http.get("/metrics").text.splitlines()
            if line.startswith("hfd_requests_in_flight{")
        ]
        if gauge == ['hfd_requests_in_flight{door="http"} 1.0'] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert gauge == ['hfd_requests_in_flight{door="http"} 1.0']  # the scrape itself
    tracebacks = [line for line in daemon.output if "Traceback" in line or '"exc":' in line]
    assert not tracebacks, "\n".join(tracebacks[:5])
