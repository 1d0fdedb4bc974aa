"""OpenVINO GenAI's ``ContinuousBatchingPipeline`` in a child process of its own.

``ContinuousBatchingPipeline.step()`` keeps Python's GIL for the whole step (measured: a Python
thread beside it ran at 7% of its speed). In the daemon's process that froze both doors and the
scheduler's detokenising for every step, so serving cost the engine's compute *plus* all of the
per-token Python work, one after the other (served throughput was 0.70x the same pipeline driven
offline). In a child process the pipeline computes while the daemon's threads stream tokens.

The child also runs ahead: while it has unfinished requests it steps continuously and writes each
step's new tokens to its reply pipe, without waiting to be asked. A request/reply step cost a
pipe round trip plus the wait for the daemon's worker thread to get the GIL back from the event
loop (up to the 5 ms switch interval) on every step; running ahead, the pipeline never idles
while the daemon handles the previous step's tokens. The daemon's ``step()`` takes every step
that is ready (at least one) and merges them.

The protocol is private to this module and its helpers (``openvino_pipe``: the framing and the
child's channel; ``openvino_engine``: the pipeline itself). Each message is a little-endian u32
length and a msgpack map, over two pipes handed to the child by file descriptor (its stdout
stays free for the engine's own messages). To the child: ``init`` (the child loads the pipeline, says ``{"phase": "warming"}``, runs one
short warm-up batch, then answers ``{"ok": true, "precision": ..., "kv": bytes}`` or ``{"error": ...}``;
a child that dies before answering fails the load with ``EngineCrashed``),
then one-way ``add`` (token ids and a plain dict of ``GenerationConfig`` fields, validated by the
parent), ``go`` (the parent's ``step()``: requests added since the last one join the pipeline
now, together), ``cancel`` and ``close``. From the child, after ``init``: ``{"out": [[seq_id, new token
ids, finish reason or None, error text or None], ...], "kv": bytes}``. The child never blocks on
writing without also reading, so neither side can wait on the other forever; it exits when its
request pipe closes, so a daemon that dies, however it dies, takes its engine processes with it.

Run as ``python -m hfd.backends.openvino_process <request fd> <reply fd>``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

from hfd.backends import load_progress
from hfd.backends.openvino_engine import PipelineEngine, warn_failed
from hfd.backends.openvino_pipe import Channel, Output, Pacer, frame, merge, read_chunk, split_frames
from hfd.backends.proving import EngineCrashed, exit_description
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

_CLOSE_WAIT_S: Final = 5.0


class EngineProcessError(ModelUnavailable):
    """The engine process is gone (it crashed or was killed); the model must be loaded again."""


# -- the parent's side --------------------------------------------------------------------------


class PipelineProcess:
    """A handle on a ``ContinuousBatchingPipeline`` running in a child process.

    ``add`` and ``cancel`` only write (any thread, under a lock); ``step`` reads and is called by
    one thread at a time (the generation scheduler's worker).
    """

    module: str = __name__  # the child's module (``python -m``): vision chat runs its own

    def __init__(self, init: dict[str, Any]) -> None:
        """``init``: what the pipeline is made from (``openvino_engine.pipeline_init``)."""
        load_progress.report("compiling")  # the child starts (or the spare is taken), reads, compiles
        self._proc, self._tx, self._rx = _take_spare(self.module) or _spawn(self.module)
        self._wake_read = self._wake_write = -1  # made in the try below: close() ends the child
        self._buffer = bytearray()
        self._lock = threading.Lock()  # one writer at a time on the request pipe
        self._fds_lock = threading.Lock()  # closing the descriptors vs interrupt()
        self._dead: str | None = None
        self._open = True
        self._added = False  # requests sent since the last step(): the next one says "go"
        self.kv_cache_bytes = 0
        self.precision: str | None = None
        try:
            self._wake_read, self._wake_write = os.pipe()  # interrupt() -> a waiting step() returns
            os.set_blocking(self._wake_read, False)
            os.set_blocking(self._wake_write, False)
            self._send({"op": "init", **init})
            # The child loads the pipeline and warms it up (one short batch) before it answers:
            # an engine that crashes on this CPU does so here, as a load failure, not on a
            # client's request.
            try:
                reply = self._init_reply()
            except EngineProcessError:
                code = self._proc.returncode
                raise EngineCrashed(
                    f"the OpenVINO engine process died while loading and warming up the model "
                    f"({exit_description(code)})",
                    code=code,
                ) from None
            if "error" in reply:
                raise ModelUnavailable(str(reply["error"]))
            self.precision = reply.get("precision")
            self.kv_cache_bytes = int(reply.get("kv", 0))
        except BaseException:
            self.close()
            raise

    def _init_reply(self) -> dict[str, Any]:
        """The child's answer to ``init``; the phases it announces on the way (``warming``, once
        its pipeline is compiled) go to the load's progress."""
        while True:
            for message in self._read():
                if "phase" not in message:
                    return message
                load_progress.report(message["phase"])

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        """False once the child has exited or this handle was closed."""
        return self._dead is None and self._proc.poll() is None

    def rss_bytes(self) -> int:
        """Resident memory of the engine process (from /proc; 0 elsewhere or once it is gone)."""
        try:
            pages = int(Path(f"/proc/{self._proc.pid}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return 0
        return pages * os.sysconf("SC_PAGE_SIZE") if self.alive else 0

    def add(self, seq_id: int, prompt_ids: Sequence[int], config: dict[str, Any]) -> None:
        """Queue a request; it joins the pipeline at the next ``step()`` call."""
        self._send({"op": "add", "id": seq_id, "ids": list(prompt_ids), "config": config})
        self._added = True

    def cancel(self, seq_id: int) -> None:
        self._send({"op": "cancel", "id": seq_id})

    def interrupt(self) -> None:
        """Make a ``step()`` that is waiting return now (any thread)."""
        with self._fds_lock:  # never write to a closed (and maybe reused) descriptor
            if self._open:
                try:
                    os.write(self._wake_write, b"\0")
                except OSError:  # already woken: the pipe is full
                    pass

    def step(self) -> list[Output]:
        """The tokens of every step the child has finished since the last call; waits for one
        unless ``interrupt()`` is called (then it may return nothing)."""
        if self._added:
            self._added = False
            self._send({"op": "go"})
        merged: dict[int, Output] = {}
        for message in self._read(wakeable=True):
            self.kv_cache_bytes = int(message.get("kv", self.kv_cache_bytes))
            for seq_id, tokens, finished, error, *rest in message.get("out", ()):
                warn_failed(seq_id, error)
                lps, prompt = [*rest, None, None][:2]
                merged[seq_id] = merge(merged.get(seq_id), seq_id, tokens, finished, lps, prompt)
        return list(merged.values())

    def _send(self, message: dict[str, Any]) -> None:
        data = memoryview(frame(message))
        with self._lock:
            self._check()
            try:
                while data:
                    data = data[os.write(self._tx, data) :]
            except OSError as exc:
                self._died(repr(exc))

    def _read(self, *, wakeable: bool = False) -> list[dict[str, Any]]:
        """The complete messages the child has sent; blocks until there is at least one, or,
        when ``wakeable``, until ``interrupt()``. One read takes all the pipe holds then (up to
        64 KiB: every step the child has finished meanwhile); what comes after waits for the
        next call, which is one system call less per token than asking the pipe again."""
        self._check()
        frames: list[dict[str, Any]] = []
        try:
            while True:
                frames.extend(split_frames(self._buffer))
                if frames:
                    return frames
                if wakeable and not frames:
                    ready = select.select([self._rx, self._wake_read], [], [])[0]  # without the GIL
                    if self._wake_read in ready:
                        self._drain_wakes()
                        if self._rx not in ready:
                            return frames
                data = read_chunk(self._rx)  # waits without the GIL
                if not data:
                    self._died("end of pipe")
                self._buffer += data
        except (OSError, ValueError) as exc:
            self._died(repr(exc))

    def _drain_wakes(self) -> None:
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass

    def _check(self) -> None:
        if self._dead is not None:
            raise EngineProcessError(self._dead)

    def _died(self, why: str) -> NoReturn:
        try:
            code = self._proc.wait(timeout=_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        self._dead = f"the OpenVINO engine process exited ({exit_description(code)}); load the model again"
        log.error("engine process exited", extra={"pid": self._proc.pid, "code": code, "why": why})
        raise EngineProcessError(self._dead)

    def close(self) -> None:
        with self._lock:
            if self._dead is None:
                try:
                    os.write(self._tx, frame({"op": "close"}))
                except OSError:
                    pass
                self._dead = "the OpenVINO engine process was closed"
        # The process goes first: a step() still waiting on the pipe then sees its end, rather
        # than a descriptor closed (and perhaps reused) under it.
        try:
            self._proc.wait(timeout=_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        with self._fds_lock:
            if self._open:
                self._open = False
                for fd in (self._tx, self._rx, self._wake_read, self._wake_write):
                    if fd >= 0:
                        os.close(fd)


def _spawn(module: str) -> tuple[subprocess.Popen[bytes], int, int]:
    """A new engine process running ``module``: (process, request pipe, reply pipe)."""
    request_read, request_write = os.pipe()
    reply_read, reply_write = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, str(request_read), str(reply_write)],
            pass_fds=(request_read, reply_write),
            stdin=subprocess.DEVNULL,
            stdout=_stderr_fd(),
        )
    except OSError as exc:
        for fd in (request_read, request_write, reply_read, reply_write):
            os.close(fd)
        raise ModelUnavailable(f"cannot start the OpenVINO engine process: {exc}") from exc
    os.close(request_read)
    os.close(reply_write)
    return proc, request_write, reply_read


# -- the spare engine process -------------------------------------------------------------------

# An engine process started before a load asks for one (``start_spare``, once the daemon is
# ready): Python's start and the child's imports (openvino_genai) are most of a warm start's
# load. One at most; the next generation load takes it, and one not taken within SPARE_IDLE_S is
# closed: idle it holds SPARE_BYTES (measured: 82 MiB of resident memory), counted nowhere until
# a load takes it (the load's estimate then counts it as its engine process).
SPARE_IDLE_S: Final = 120.0
SPARE_BYTES: Final = 96 * 1024 * 1024
_Spare = tuple[subprocess.Popen[bytes], int, int, str]  # process, its pipes, its module
_spare_lock = threading.Lock()
_spare: _Spare | None = None
# Set by ``spare_kept``: loads in its block start their own engine process.
_keep_spare: contextvars.ContextVar[bool] = contextvars.ContextVar("hfd_keep_spare", default=False)
_keepers = 0  # ``spare_kept`` blocks open in any thread: the spare does not expire meanwhile


@contextlib.contextmanager
def spare_kept() -> Iterator[None]:
    """Loads in this block (this thread or task) leave the spare for the load it was started
    for: an engine measurement's loads (``daemon.models.engine_choice``) run just before it. The
    spare's idle time does not end while such a block is open: a measurement may take longer."""
    global _keepers
    token = _keep_spare.set(True)
    with _spare_lock:
        _keepers += 1
    try:
        yield
    finally:
        with _spare_lock:
            _keepers -= 1
        _keep_spare.reset(token)


def start_spare(idle_s: float = SPARE_IDLE_S) -> int:
    """Start the spare engine process unless there is one; its pid."""
    global _spare
    with _spare_lock:
        if _spare is None:
            _spare = (*_spawn(PipelineProcess.module), PipelineProcess.module)
            _expire_after(_spare, idle_s)
        return _spare[0].pid


def _expire_after(spare: _Spare, idle_s: float) -> None:
    timer = threading.Timer(idle_s, _expire, args=(spare, idle_s))
    timer.daemon = True
    timer.start()


def _take_spare(module: str) -> tuple[subprocess.Popen[bytes], int, int] | None:
    """The spare for a load of ``module``; None when there is none or it is not usable. A spare
    of another module (a vision chat load runs its own) is left for the load it was started for."""
    global _spare
    if _keep_spare.get():
        return None
    with _spare_lock:
        spare = _spare
        if spare is None or spare[3] != module:
            return None
        _spare = None
    proc, tx, rx, _ = spare
    if proc.poll() is None:
        return proc, tx, rx
    _close_spare(spare)  # it exited: only its pipes to close
    return None


def close_spare() -> None:
    """Close the spare unless a load took it (the daemon's shutdown)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        _close_spare(spare)


def _expire(spare: _Spare, idle_s: float) -> None:
    """The spare's idle time is over: close it, unless a load took it or a measurement that
    keeps it for the next load is still running (then it waits another ``idle_s``)."""
    global _spare
    with _spare_lock:
        if _spare is not spare:
            return
        if _keepers:
            _expire_after(spare, idle_s)
            return
        _spare = None
    _close_spare(spare)


def _close_spare(spare: _Spare) -> None:
    proc, tx, rx, _ = spare
    for fd in (tx, rx):  # the child exits when its request pipe closes
        with contextlib.suppress(OSError):
            os.close(fd)
    try:
        proc.wait(timeout=_CLOSE_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _stderr_fd() -> int:
    try:
        return sys.__stderr__.fileno() if sys.__stderr__ is not None else subprocess.DEVNULL
    except (OSError, ValueError):
        return subprocess.DEVNULL


# -- the child's side ---------------------------------------------------------------------------


def _serve(channel: Channel) -> int:
    engine: PipelineEngine | None = None
    # Requests added since the parent's last step() call: they reach the pipeline together at its
    # next "go", as they would in-process, so what shares a first step does not depend on how
    # the pipe happened to deliver them (GenAI's seeded sampling depends on it).
    held: dict[int, dict[str, Any]] = {}
    pacer = Pacer(0.0)
    while True:
        # Wait for the parent only with nothing to do (messages may have come in during a send).
        idle = not channel.inbox and (engine is None or not engine.busy)
        channel.receive(None if idle else 0)
        messages, channel.inbox = channel.inbox, []
        failed: list[list[Any]] = []
        for message in messages:
            op = message.get("op")
            if op == "close":
                return 0
            if op == "init":
                pacer = Pacer(float(message.get("stream_interval_ms") or 0) / 1000)
                try:
                    engine = PipelineEngine(message)
                    channel.send({"phase": "warming"})  # compiled: the parent's hfd ps says so
                    precision = engine.warm_up()
                except Exception as exc:
                    engine = None
                    channel.send({"error": f"OpenVINO GenAI cannot load the model: {exc}"})
                    continue
                channel.send({"ok": True, "precision": precision, "kv": engine.kv_bytes()})
            elif engine is not None and op == "add":
                held[int(message["id"])] = message
            elif engine is not None and op == "cancel":
                pacer.forget(int(message["id"]))
                if held.pop(int(message["id"]), None) is None:
                    engine.cancel(int(message["id"]))
            elif engine is not None and op == "go":
                for seq_id, add in held.items():
                    try:
                        engine.add(seq_id, list(add["ids"]), dict(add["config"]))
                    except Exception as exc:
                        failed.append([seq_id, [], "error", f"OpenVINO GenAI refused it: {exc}"])
                held.clear()
        if channel.closed:
            return 0  # the daemon closed the pipe or died
        if engine is not None and (failed or engine.busy):
            outputs = failed + (engine.step() if engine.busy else [])
            outputs = pacer.take(outputs, idle=not engine.busy, now=time.monotonic())
            if outputs:
                channel.send({"out": outputs, "kv": engine.kv_bytes()})


def main(argv: Sequence[str], serve: Callable[[Channel], int] = _serve) -> int:
    """The child: ``serve`` the parent over the pipes named in ``argv`` (vision chat's child
    passes its own)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:  # before the parent's init: a spare engine process waits with its imports done
        import openvino_genai  # noqa: F401
    except ImportError:
        pass
    try:
        return serve(Channel(int(argv[0]), int(argv[1])))
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
