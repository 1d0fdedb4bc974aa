"""What the peers of ``scripts/bench peers`` share: their cache, a server process on loopback,
and the reason a peer cannot be had here."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

# Builds, converted models and venvs of the peers: outside the repository, kept between runs.
PEERS_CACHE = Path(os.environ.get("HFD_PEERS_CACHE") or Path.home() / ".cache" / "hfd" / "peers")


class Unavailable(Exception):
    """A peer that cannot be built, converted or started here; the message says why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_logged(cmd: Sequence[str], log: Path, *, timeout: float, what: str) -> None:
    """Run ``cmd`` with its output appended to ``log``; Unavailable (the log's tail) when it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        try:
            code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Unavailable(f"{what}: {exc}") from exc
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise Unavailable(f"{what} failed (exit {code}; log {log}):\n{tail}")


@contextlib.contextmanager
def server(
    cmd: Sequence[str],
    health_url: str,
    log: Path,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
) -> Iterator[subprocess.Popen[bytes]]:
    """A peer's server process (its own process group), ready once ``health_url`` answers 200;
    stopped with SIGTERM (then SIGKILL) when the block ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = log.open("ab")
    proc = subprocess.Popen(
        list(cmd),
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise Unavailable(
                    f"{cmd[0]} exited with {proc.returncode} before it was ready (log {log}):\n{tail}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(health_url, timeout=5).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise Unavailable(f"{cmd[0]} was not ready in {timeout:.0f}s (log {log})")
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        out.close()
