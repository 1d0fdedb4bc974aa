"""Run a real `hfd serve` subprocess for end-to-end tests: temporary dirs, socket and port,
and the addresses read from its ready line."""

from __future__ import annotations

import ctypes
import functools
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY = re.compile(r"^hfd ready (.*)$")
_CLIENT_OPTIONS: dict[str, Any] = {"max_retries": 0, "timeout": 120}
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the daemon gets SIGTERM when the test or benchmark process dies, so a killed
    run never leaves a daemon behind."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _limited(nofile: tuple[int, int]) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, nofile)
    _die_with_parent()


def write_config(path: Path, models: dict[str, Path | str], extra: str = "") -> Path:
    lines = []
    for name, ref in models.items():
        lines += ["[[models]]", f"name = {name!r}", f"ref = {str(ref)!r}", ""]
    path.write_text(extra + "\n" + "\n".join(lines))
    return path


class OutputReader:
    """Reads the daemon's merged stdout/stderr on a thread, line by line.

    One blocking reader is the only safe way: ``select()`` on the pipe plus buffered
    ``readline()`` can leave a line (the ready line) in Python's buffer where select never sees
    it. Reading continuously also keeps a full pipe from ever blocking the daemon.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.ready: re.Match[str] | None = None
        self._ready = threading.Event()
        self._proc = proc
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if self.ready is None:
                m = READY.match(line.strip())
                if m:
                    self.ready = m
                    self._ready.set()
        self._ready.set()  # the daemon exited: stop waiting

    def close(self) -> None:
        """Once the daemon has exited: the last lines read, the pipe closed (not left to the
        garbage collector, which warns)."""
        self.thread.join(timeout=5)
        if not self.thread.is_alive() and self._proc.stdout is not None:
            self._proc.stdout.close()

    def wait_ready(self, timeout: float) -> re.Match[str] | None:
        self._ready.wait(timeout)
        return self.ready


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    http: str
    ipc: str
    workdir: Path
    reader: OutputReader

    @property
    def output(self) -> list[str]:
        return self.reader.lines

    @property
    def base_url(self) -> str:
        return self.http + "/v1"

    @property
    def ipc_path(self) -> Path:
        return Path(self.ipc.removeprefix("ipc://"))

    def openai(self, **options: Any) -> Any:
        """The official ``openai`` client on this daemon's ``/v1``; no retries, so a failure shows."""
        import openai

        return openai.OpenAI(base_url=self.base_url, **{"api_key": "unused", **_CLIENT_OPTIONS, **options})

    def anthropic(self, **options: Any) -> Any:
        """The official ``anthropic`` client on this daemon (it adds ``/v1`` itself); no retries."""
        import anthropic

        return anthropic.Anthropic(base_url=self.http, **{"api_key": "unused", **_CLIENT_OPTIONS, **options})

    def post_ok(self, path: str, body: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        """The JSON of a 200 answer to ``body`` posted to ``path``; fails the test on any other."""
        import httpx

        r = httpx.post(self.http + path, json=body, timeout=timeout)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def wait_logged(self, message: str, timeout: float = 30.0) -> bool:
        """Whether a line of the daemon's output holds ``message`` within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not any(message in line for line in self.output):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.close()
        return code

    def stop(self) -> int:
        try:
            if self.proc.poll() is None:
                self.signal(signal.SIGTERM)
                try:
                    return self.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    return self.wait(10)
            self.reader.close()  # it exited on its own (or a test waited for it)
            return self.proc.returncode
        finally:
            # The socket's directory is the runtime dir start_daemon made; a socket a test put
            # straight in the temporary directory (or /) must not take that directory with it.
            parent = self.ipc_path.parent
            if parent not in (Path(tempfile.gettempdir()), Path("/tmp"), Path("/")):
                shutil.rmtree(parent, ignore_errors=True)


def start_daemon(
    workdir: Path,
    models: dict[str, Path | str],
    *,
    extra_config: str = "",
    args: Iterable[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 120.0,
    nofile: tuple[int, int] | None = None,
) -> Daemon:
    """Start `hfd serve` on a free port and a socket under ``workdir``; wait for its ready line.

    ``nofile``: the (soft, hard) open-file limit the daemon starts with."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = write_config(workdir / "config.toml", models, extra_config)
    # ipc socket paths are limited to ~100 bytes: keep the runtime dir short.
    runtime = Path(os.environ.get("TMPDIR", "/tmp")) / f"hfd-t{os.getpid()}-{time.monotonic_ns() % 10**9}"
    cmd = [
        sys.executable,
        "-m",
        "hfd",
        "serve",
        "--config",
        str(config),
        "--state-dir",
        str(workdir / "state"),
        "--cache-dir",
        str(workdir / "cache"),
        "--runtime-dir",
        str(runtime),
        "--http-port",
        "0",
        "--log-format",
        "json",
        *args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        preexec_fn=_die_with_parent if nofile is None else functools.partial(_limited, nofile),
    )
    reader = OutputReader(proc)
    m = reader.wait_ready(timeout)
    if m is not None:
        addrs = dict(part.split("=", 1) for part in m.group(1).split())
        return Daemon(proc=proc, http=addrs.get("http", ""), ipc=addrs["ipc"], workdir=workdir, reader=reader)
    if proc.poll() is None:  # stuck: ask for every thread's stack before killing it
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
    proc.kill()
    proc.wait(timeout=10)
    reader.close()
    shutil.rmtree(runtime, ignore_errors=True)
    raise RuntimeError("hfd serve did not become ready:\n" + "\n".join(reader.lines))


def run_hfd(*args: str, timeout: float = 120, **options: Any) -> subprocess.CompletedProcess[str]:
    """``python -m hfd ARGS`` to completion, its output captured as text (not checked)."""
    cmd = [sys.executable, "-m", "hfd", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **options)


@contextmanager
def running_daemon(workdir: Path, models: dict[str, Path | str], **options: Any) -> Iterator[Daemon]:
    """``start_daemon(workdir, models, **options)`` for a ``with`` block; afterwards it must stop
    cleanly on SIGTERM (exit 0), or the test fails showing the daemon's last lines."""
    d = start_daemon(workdir, models, **options)
    try:
        yield d
    finally:
        assert d.stop() == 0, "\n".join(d.output[-40:])
