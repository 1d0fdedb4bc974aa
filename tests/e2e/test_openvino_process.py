"""OpenVINO generation served by the daemon, with the pipeline in its own engine process: many
concurrent streams, cancellation by disconnect, and no engine process outliving the daemon,
whether it stops on SIGTERM or dies by SIGKILL."""

from __future__ import annotations

import os
import platform
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from support.daemon import Daemon, start_daemon
from support.models import tiny_llama

from hfd.daemon.cli import main as cli

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed")
pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")]


def engine_processes(daemon_pid: int) -> list[int]:
    """The daemon's children that run the OpenVINO pipeline."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if int(stat[1]) == daemon_pid and b"hfd.backends.openvino_process" in cmdline:
            found.append(int(entry.name))
    return found


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":  # exited, waiting for a parent that is gone to be reaped by init
            return True
        time.sleep(0.1)
    return False


def scheduler_stats(d: Daemon) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(d.http + "/api/ps", timeout=10).json()["models"][0]["scheduler"]
    return stats


def idle_scheduler_stats(d: Daemon, timeout: float = 30.0) -> dict[str, int]:
    """The scheduler's counts once nothing is active: a disconnect reaches it asynchronously."""
    deadline = time.monotonic() + timeout
    while (stats := scheduler_stats(d))["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stats["active"], stats
    return stats


def test_streams_are_served_and_the_engine_process_ends_with_the_daemon(tmp_path: Path) -> None:
    # No response cache: every request below must reach the engine.
    args = ["--engine", "openvino", "--threads", "1", "--cache-enabled", "false"]
    d = start_daemon(tmp_path, {"chat": tiny_llama()}, args=args)
    try:
        client = openai.OpenAI(base_url=d.base_url, api_key="none", timeout=120)

        def complete(i: int) -> tuple[str, int, str | None]:
            r = client.completions.create(
                model="chat", prompt=f"request {i} says", max_tokens=12, temperature=0,
                # cache off: every request reaches the scheduler, whose counts are checked below
                extra_body={"ignore_eos": True, "cache": False},
            )  # fmt: skip
            assert r.usage is not None
            return r.choices[0].text, r.usage.completion_tokens, r.choices[0].finish_reason

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(complete, range(8)))
        assert all(tokens == 12 and reason == "length" for _, tokens, reason in results)
        assert complete(3) == results[3]  # greedy: the same alone as in a batch

        loaded = httpx.get(d.http + "/api/ps", timeout=10).json()["models"]
        assert [(m["name"], m["engine"]) for m in loaded] == [("chat", "openvino")]
        row = loaded[0]
        assert (row["preferred_engine"], row["fallback_reason"]) == ("openvino", None)
        # One thread: f32 on every CPU (bf16 at one thread crashes OpenVINO where it is native).
        assert (row["precision"], row["weight_format"], row["threads"]) == ("f32", "fp32", 1)
        assert row["kv_cache"]["planned_bytes"] > 0
        assert row["kv_cache"]["allocated_bytes"] > 0  # allocated at the warm-up during load
        children = engine_processes(d.proc.pid)
        assert len(children) == 1, children

        # A client that goes away mid-stream frees its sequence; the engine keeps serving.
        before = scheduler_stats(d)
        stream = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "go on"}], max_tokens=200,
            temperature=0, stream=True, extra_body={"ignore_eos": True},
        )  # fmt: skip
        next(iter(stream))
        stream.close()
        assert complete(5) == results[5]
        after = idle_scheduler_stats(d)
        # The closed stream ends cancelled, before its 200 tokens. Cancelled while it still waited
        # for a row (the role chunk comes before any token), it never reached the engine and is
        # not among requests_finished; so the request after it counts, and the stream may.
        assert 12 <= after["tokens_generated"] - before["tokens_generated"] < 12 + 200
        assert after["requests_finished"] - before["requests_finished"] in (1, 2)

        assert d.stop() == 0  # SIGTERM: the model is closed and its engine process ends
        assert gone(children[0], 10), "the engine process outlived a daemon stopped by SIGTERM"
    finally:
        d.stop()


@pytest.fixture
def ov_daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon serving the tiny Llama on OpenVINO (its pipeline in an engine process), stopped
    afterwards whatever the test did to it."""
    d = start_daemon(tmp_path, {"chat": tiny_llama()}, args=["--engine", "openvino", "--threads", "1"])
    try:
        yield d
    finally:
        d.stop()


def test_an_engine_process_does_not_outlive_a_killed_daemon(ov_daemon: Daemon) -> None:
    d = ov_daemon
    body = {"model": "chat", "prompt": "hello", "max_tokens": 3, "temperature": 0}
    assert httpx.post(d.base_url + "/completions", json=body, timeout=120).status_code == 200
    children = engine_processes(d.proc.pid)
    assert len(children) == 1, children
    os.kill(d.proc.pid, signal.SIGKILL)
    d.proc.wait(timeout=10)
    assert gone(children[0], 10), "the engine process outlived a daemon killed by SIGKILL"


def test_a_dead_engine_process_is_replaced_on_the_next_request(ov_daemon: Daemon) -> None:
    d = ov_daemon
    body = {"model": "chat", "prompt": "hello", "max_tokens": 4, "temperature": 0, "ignore_eos": True}
    first = httpx.post(d.base_url + "/completions", json=body, timeout=120)
    assert first.status_code == 200, first.text
    [engine] = engine_processes(d.proc.pid)
    os.kill(engine, signal.SIGKILL)
    assert gone(engine, 10)
    # The daemon notices the dead engine when the model is next needed and loads it again
    # (another prompt: the response cache would answer the same one without the model).
    again = httpx.post(d.base_url + "/completions", json={**body, "prompt": "hello again"}, timeout=120)
    assert again.status_code == 200, again.text
    assert again.json()["usage"]["completion_tokens"] == 4
    [replacement] = engine_processes(d.proc.pid)
    assert replacement != engine
    assert "engine is gone" in "\n".join(d.output)
    assert d.stop() == 0


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="OpenVINO is the first choice on x86 CPUs only",
)
def test_an_engine_that_dies_in_warm_up_is_replaced_by_torch_and_ps_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A real SIGFPE in the engine process during its warm-up, injected by a test-only option.
    model = f'[[models]]\nname = "chat"\nref = "{tiny_llama()}"\noptions = {{ test_fault = "warmup" }}\n'
    d = start_daemon(tmp_path, {}, extra_config=model, args=["--threads", "1"], env={"HFD_TEST_FAULTS": "1"})
    try:
        body = {"model": "chat", "prompt": "hello", "max_tokens": 3, "temperature": 0}
        r = httpx.post(d.base_url + "/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        [row] = httpx.get(d.http + "/api/ps", timeout=10).json()["models"]
        assert (row["engine"], row["preferred_engine"]) == ("torch", "openvino")
        assert "SIGFPE" in row["fallback_reason"]
        assert row["breaker"]["state"] == "closed"
        assert engine_processes(d.proc.pid) == []
        assert cli(["ps", "--ipc-path", d.ipc_path.as_posix(), "--timeout", "60"]) == 0
        assert "chat: torch serves, openvino preferred: " in capsys.readouterr().out
        assert any("model served by a fallback engine" in line for line in d.output)
    finally:
        assert d.stop() == 0
