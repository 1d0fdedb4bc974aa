"""Observability of a real `hfd serve`: after a known set of requests on both doors,
`/metrics` shows the matching counts and `hfd stats` the matching totals; `/ready` says ready;
log lines carry the request id the client sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families
from support.daemon import start_daemon
from support.models import tiny_bert, tiny_llama

from hfd.client.protocol import OP_EMBEDDINGS, Request, decode_reply, encode_request

pytestmark = pytest.mark.timeout(300)


def scrape(http: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(http + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return metrics.get((name, frozenset(labels.items())), 0.0)


def ipc_embed(endpoint: str, texts: list[str]) -> dict[str, object]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send_multipart(
            encode_request(Request(id="e1", op=OP_EMBEDDINGS, body={"model": "emb", "input": texts}))
        )
        assert sock.poll(60_000), "no IPC reply"
        reply = decode_reply(sock.recv_multipart())
        assert reply.kind == "result", reply.body
        return reply.body
    finally:
        sock.close()


def test_metrics_and_stats_match_the_requests(tmp_path: Path) -> None:
    d = start_daemon(
        tmp_path,
        {"emb": tiny_bert(), "chat": tiny_llama()},
        args=["--usage-flush-seconds", "0.2", "--cache-enabled", "false"],
    )
    client = openai.OpenAI(base_url=d.base_url, api_key="none", max_retries=0, timeout=120)
    try:
        ready = httpx.get(d.http + "/ready", timeout=10)
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text

        emb_tokens = 0
        for i in range(3):
            res = client.embeddings.create(model="emb", input=[f"first sentence {i}", "a second one"])
            emb_tokens += res.usage.prompt_tokens
        chat_in = chat_out = 0
        for _ in range(2):
            res_c = client.completions.create(
                model="chat", prompt="once upon a time", max_tokens=4, extra_body={"ignore_eos": True}
            )
            assert res_c.usage is not None
            chat_in += res_c.usage.prompt_tokens
            chat_out += res_c.usage.completion_tokens
        assert chat_out == 8
        # A streamed chat, so there is a time to first token.
        stream = client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
        usage = chunks[-1].usage
        assert usage is not None
        chat_in += usage.prompt_tokens
        chat_out += usage.completion_tokens
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="no-such-model", input=["x"])
        ipc_body = ipc_embed(d.ipc, ["over the socket"])
        emb_tokens += int(ipc_body["usage"]["prompt_tokens"])  # type: ignore[index]

        m = scrape(d.http)
        req = "hfd_requests_total"
        assert value(m, req, door="http", route="/v1/embeddings", model="emb", status="200") == 3
        assert value(m, req, door="http", route="/v1/completions", model="chat", status="200") == 2
        assert value(m, req, door="http", route="/v1/chat/completions", model="chat", status="200") == 1
        assert value(m, req, door="http", route="/v1/embeddings", model="unknown", status="404") == 1
        assert value(m, req, door="ipc", route="embeddings.create", model="emb", status="200") == 1
        assert value(m, "hfd_tokens_total", model="emb", direction="in") == emb_tokens
        assert value(m, "hfd_tokens_total", model="chat", direction="in") == chat_in
        assert value(m, "hfd_tokens_total", model="chat", direction="out") == chat_out
        assert value(m, "hfd_time_to_first_token_seconds_count", door="http", model="chat") == 3
        assert (
            value(m, "hfd_request_duration_seconds_count", door="http", route="/v1/completions", model="chat")
            == 2
        )
        loaded = {
            dict(labels)["model"] for (name, labels), v in m.items() if name == "hfd_model_loaded" and v == 1
        }
        assert loaded == {"emb", "chat"}
        assert all(v > 0 for (name, labels), v in m.items() if name == "hfd_model_memory_bytes") and any(
            name == "hfd_model_memory_bytes" for name, _ in m
        )
        assert value(m, "hfd_requests_in_flight", door="http") == 1  # the scrape itself
        # Every embedded input went through an encoder batch: 3 requests of 2 and 1 of 1.
        assert value(m, "hfd_batch_size_sum", model="emb", kind="encoder") == 7
        assert value(m, "hfd_batch_size_count", model="chat", kind="generation") >= 4

        # The request id: taken from the client, echoed, and on the daemon's log lines.
        r = httpx.post(
            d.base_url + "/embeddings",
            json={"model": "no-such-model", "input": "x"},
            headers={"X-Request-Id": "trace-42"},
            timeout=30,
        )
        assert r.headers["x-request-id"] == "trace-42"
    finally:
        assert d.stop() == 0  # flushes the usage log

    logged = [json.loads(line) for line in d.output if line.startswith("{")]
    assert any(rec.get("request_id") == "trace-42" for rec in logged), "no log line with the request id"

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "hfd",
            "stats",
            "--by",
            "model",
            "--json",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rows = {r["group"]: r for r in json.loads(out.stdout)}
    assert (
        rows["emb"]["requests"] == 4
        and rows["emb"]["prompt_tokens"] == emb_tokens
        and rows["emb"]["errors"] == 0
    )
    assert rows["chat"]["requests"] == 3
    assert rows["chat"]["prompt_tokens"] == chat_in and rows["chat"]["completion_tokens"] == chat_out
    assert rows["no-such-model"]["errors"] == 2
    by_key = subprocess.run(
        [sys.executable, "-m", "hfd", "stats", "--by", "key", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "anonymous" in by_key.stdout and "local:" in by_key.stdout
    total = [line for line in by_key.stdout.splitlines() if line.startswith("TOTAL")]
    assert total and total[0].split()[1] == str(4 + 3 + 2)
