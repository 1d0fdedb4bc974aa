"""Hostile and careless requests against a real ``hfd serve``, on both doors: a 10 MB prompt,
hundreds of unknown model names, non-finite numbers, lone surrogates and out-of-range seeds.
Each gets a clear 4xx, and the daemon neither grows nor stops answering."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families
from support.daemon import Daemon, running_daemon
from support.models import tiny_bert, tiny_llama

from hfd.client.protocol import PROTOCOL_VERSION, Reply, decode_reply, packb

pytestmark = pytest.mark.timeout(300)

CHAT, EMBED = "chat", "emb"
BIG = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    # The default body limit (16 MiB): a 10 MB prompt reaches the service.
    with running_daemon(
        tmp_path_factory.mktemp("bounded"),
        {CHAT: tiny_llama(), EMBED: tiny_bert()},
        args=["--engine", "torch"],
    ) as d:
        yield d


def ipc(dealer: zmq.Socket[bytes], rid: str, op: str, body: Any = None, timeout: float = 60.0) -> Reply:
    dealer.send_multipart([packb({"v": PROTOCOL_VERSION, "id": rid, "op": op, "body": body or {}})])
    assert dealer.poll(int(timeout * 1000)), "no reply"
    reply = decode_reply(dealer.recv_multipart())
    assert reply.id == rid
    return reply


def raw(http: httpx.Client, path: str, body: str) -> httpx.Response:
    """POST a JSON text as written (NaN, Infinity and lone surrogates are valid there)."""
    return http.post(path, content=body.encode(), headers={"content-type": "application/json"})


def error_of(r: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return r.json()["error"]  # type: ignore[no-any-return]


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {"model": CHAT, "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


# ----------------------------------------------------------------------------- large prompts


def test_a_10mb_prompt_is_refused_and_both_doors_answer_while_it_is_handled(
    http: httpx.Client, dealer: zmq.Socket[bytes], daemon: Daemon
) -> None:
    assert http.post("/v1/chat/completions", json=chat_body("warm up")).status_code == 200
    body = json.dumps(chat_body("word " * (BIG // 5))).encode()
    events: list[str] = []

    def upload() -> Iterator[bytes]:
        # Half the body is in the daemon; both doors must answer before the rest is sent.
        yield body[: len(body) // 2]
        with httpx.Client(base_url=daemon.http, timeout=30) as other:
            assert other.get("/health").json()["status"] == "ok"
        events.append("http health")
        assert ipc(dealer, "h1", "health").kind == "result"
        events.append("ipc health")
        yield body[len(body) // 2 :]

    r = http.post("/v1/chat/completions", content=upload(), headers={"content-type": "application/json"})
    events.append("big request answered")
    err = error_of(r)
    assert (err["code"], err["param"]) == ("context_length_exceeded", "messages"), err
    # Refused by its size in bytes, before the tokenizer saw it (the tokenizer would have held
    # the interpreter for seconds, and answered with a token count).
    assert err["details"]["prompt_bytes"] > err["details"]["max_prompt_bytes"], err
    assert events == ["http health", "ipc health", "big request answered"]
    # Sent at once, it is refused just the same, and the doors answer afterwards.
    err = error_of(
        http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    )
    assert err["code"] == "context_length_exceeded"
    assert http.get("/health").status_code == 200
    assert ipc(dealer, "h2", "health").kind == "result"


def test_embedding_inputs_beyond_the_byte_cap_are_refused(http: httpx.Client) -> None:
    err = error_of(
        http.post("/v1/embeddings", json={"model": EMBED, "input": ["a" * (3 << 20), "b" * (2 << 20)]})
    )
    assert (err["code"], err["param"]) == ("invalid_request", "input")


# ----------------------------------------------------------------------------- model names


def model_labels(http: httpx.Client) -> set[str]:
    labels = set()
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if "model" in sample.labels:
                labels.add(sample.labels["model"])
    return labels


def series(http: httpx.Client) -> int:
    return sum(len(f.samples) for f in text_string_to_metric_families(http.get("/metrics").text))


def test_unknown_model_names_do_not_grow_the_daemon(http: httpx.Client, dealer: zmq.Socket[bytes]) -> None:
    models = http.get("/v1/models").json()["data"]
    # One unknown name at each door first: its label values ("unknown", 404) are new once.
    http.post("/v1/chat/completions", json=chat_body("hi", model="ghost/warm-up"))
    ipc(dealer, "g", "embeddings.create", {"model": "ghost/warm-up", "input": ["x"]})
    series(http)
    before = series(http)
    for i in range(150):
        r = http.post("/v1/chat/completions", json=chat_body("hi", model=f"ghost/model-{i}"))
        assert error_of(r, 404)["code"] == "model_not_found"
        reply = ipc(dealer, f"g{i}", "embeddings.create", {"model": f"ghost/encoder-{i}", "input": ["x"]})
        assert (reply.kind, reply.body["code"]) == ("error", "model_not_found")
    assert http.get("/v1/models").json()["data"] == models
    assert model_labels(http) <= {CHAT, EMBED, "unknown", ""}
    assert series(http) == before  # not one series per name
    assert http.get("/api/ps").status_code == 200


# ----------------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/api/load", '{"model": "chat", "keep_alive": NaN}', "keep_alive"),
        ("/api/load", '{"model": "chat", "keep_alive": Infinity}', "keep_alive"),
        ("/api/load", '{"model": "chat", "keep_alive": "1e999s"}', "keep_alive"),
        ("/v1/embeddings", '{"model": "emb", "input": "x", "keep_alive": -Infinity}', "keep_alive"),
        ("/v1/chat/completions", json.dumps(chat_body("hi"))[:-1] + ', "keep_alive": "inf"}', "keep_alive"),
        ("/v1/chat/completions", json.dumps(chat_body("hi"))[:-1] + ', "temperature": NaN}', "temperature"),
        ("/v1/completions", '{"model": "chat", "prompt": "x", "top_p": NaN}', "top_p"),
        (
            "/v1/completions",
            '{"model": "chat", "prompt": "x", "frequency_penalty": Infinity}',
            "frequency_penalty",
        ),
    ],
)
def test_http_refuses_non_finite_numbers(http: httpx.Client, path: str, body: str, param: str) -> None:
    err = error_of(raw(http, path, body))
    assert (err["type"], err["param"]) == ("invalid_request_error", param), err
    ps = http.get("/api/ps")
    assert ps.status_code == 200, ps.text
    assert all(m["keep_alive"] == m["keep_alive"] for m in ps.json()["models"])  # no NaN stored


@pytest.mark.parametrize(
    ("op", "body"),
    [
        ("models.load", {"model": CHAT, "keep_alive": float("nan")}),
        ("models.load", {"model": CHAT, "keep_alive": "1e999s"}),
        ("embeddings.create", {"model": EMBED, "input": ["x"], "keep_alive": float("inf")}),
        ("chat.completions.create", {**chat_body("hi"), "temperature": float("nan")}),
    ],
)
def test_ipc_refuses_non_finite_numbers(
    http: httpx.Client, dealer: zmq.Socket[bytes], op: str, body: Any
) -> None:
    reply = ipc(dealer, "nf", op, body)
    assert reply.kind == "error" and reply.body["code"] == "invalid_request", reply.body
    assert reply.body["param"] in ("keep_alive", "temperature")
    assert http.get("/api/ps").status_code == 200


# ----------------------------------------------------------------------------- lone surrogates


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (
            "/v1/chat/completions",
            '{"model": "chat", "messages": [{"role": "user", "content": "a\\ud800"}]}',
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            '{"model": "chat\\udc00", "messages": [{"role": "user", "content": "a"}]}',
            "model",
        ),
        (
            "/v1/chat/completions",
            '{"model": "chat", "messages": [{"role": "user", "content": "a"}], "stop": "\\ud800"}',
            "stop",
        ),
        ("/v1/completions", '{"model": "chat", "prompt": "\\udfff"}', "prompt"),
        ("/v1/embeddings", '{"model": "emb", "input": "\\ud800"}', "input"),
        ("/v1/embeddings", '{"model": "emb", "input": ["ok", "\\ud83d"]}', "input.1"),
    ],
)
def test_lone_surrogates_are_400(http: httpx.Client, path: str, body: str, param: str) -> None:
    err = error_of(raw(http, path, body))
    assert (err["type"], err["param"]) == ("invalid_request_error", param), err
    # A correctly written pair is text like any other.
    r = http.post("/v1/embeddings", json={"model": EMBED, "input": "\U0001f600"})
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------- seeds


def test_any_integer_seed_is_served_and_deterministic(http: httpx.Client) -> None:
    for seed in (-1, 2**64, -(2**70), 12345):
        texts = []
        for _ in range(2):
            body = chat_body("tell me", seed=seed, temperature=1.0, max_tokens=8, cache=False)
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            texts.append(r.json()["choices"][0]["message"]["content"])
        assert texts[0] == texts[1], (seed, texts)
    err = error_of(http.post("/v1/chat/completions", json=chat_body("x", seed="7")), 400)
    assert err["param"] == "seed"
