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

The protocol is private to this module. Each message is a little-endian u32 length and a msgpack
map, over two pipes handed to the child by file descriptor (its stdout stays free for the
engine's own messages). To the child: ``init`` (the child loads the pipeline and runs one short
warm-up batch, then answers ``{"ok": true, "precision": ..., "kv": bytes}`` or ``{"error": ...}``;
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

import logging
import os
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import msgpack

from hfd.backends.proving import EngineCrashed, exit_description
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

_LENGTH: Final = struct.Struct("<I")
_CLOSE_WAIT_S: Final = 5.0
# Request ids of the warm-up batch: far above any sequence id the daemon hands out.
_WARM_UP_ID: Final = 1 << 62


class EngineProcessError(ModelUnavailable):
    """The engine process is gone (it crashed or was killed); the model must be loaded again."""


def _frame(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


def _split_frames(buffer: bytearray) -> list[dict[str, Any]]:
    """Remove and decode the complete messages at the start of ``buffer``."""
    frames: list[dict[str, Any]] = []
    while len(buffer) >= _LENGTH.size:
        (size,) = _LENGTH.unpack_from(buffer)
        if len(buffer) < _LENGTH.size + size:
            break
        message = msgpack.unpackb(
            bytes(buffer[_LENGTH.size : _LENGTH.size + size]), raw=False, strict_map_key=False
        )
        del buffer[: _LENGTH.size + size]
        if not isinstance(message, dict):
            raise ValueError("a message that is not a map")
        frames.append(message)
    return frames


# One sequence's output of a step: id, new tokens, finish reason, their logprobs (when asked),
# the prompt's logprobs (on the first output of an echo request; the first entry a placeholder).
Output = tuple[int, list[int], "str | None", "list[float] | None", "list[float] | None"]


def _merge(
    prev: Output | None, seq_id: int, tokens: list[int], finished: str | None, lps: Any, prompt: Any
) -> Output:
    """Several child steps' outputs for one sequence as one."""
    if prev is None:
        return (seq_id, [int(t) for t in tokens], finished, lps, prompt)
    merged_lps = None if prev[3] is None and lps is None else list(prev[3] or []) + list(lps or [])
    return (seq_id, prev[1] + [int(t) for t in tokens], finished, merged_lps, prev[4] or prompt)


def generation_config(fields: dict[str, Any]) -> Any:
    """An ``openvino_genai.GenerationConfig`` from the plain fields that cross the pipe."""
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    for name, value in fields.items():
        if name == "structured_output":  # json_schema, regex or grammar (backends.grammar_openvino)
            config.structured_output_config = ov_genai.StructuredOutputConfig(**value)
            continue
        setattr(config, name, set(value) if name == "stop_token_ids" else value)
    return config


def _readable(fd: int, timeout: float | None) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# -- the parent's side --------------------------------------------------------------------------


class PipelineProcess:
    """A handle on a ``ContinuousBatchingPipeline`` running in a child process.

    ``add`` and ``cancel`` only write (any thread, under a lock); ``step`` reads and is called by
    one thread at a time (the generation scheduler's worker).
    """

    def __init__(
        self,
        model_dir: Path,
        device: str,
        properties: dict[str, Any],
        scheduler: dict[str, Any],
        fault: str | None = None,
    ) -> None:
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(request_read), str(reply_write)],
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
        self._tx = request_write
        self._rx = reply_read
        self._wake_read, self._wake_write = os.pipe()  # interrupt() -> a waiting step() returns
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._buffer = bytearray()
        self._lock = threading.Lock()  # one writer at a time on the request pipe
        self._fds_lock = threading.Lock()  # closing the descriptors vs interrupt()
        self._dead: str | None = None
        self._open = True
        self._added = False  # requests sent since the last step(): the next one says "go"
        self.kv_cache_bytes = 0
        self.precision: str | None = None
        try:
            self._send(
                {"op": "init", "model_dir": str(model_dir), "device": device,
                 "properties": properties, "scheduler": scheduler, "fault": fault}
            )  # fmt: skip
            # The child loads the pipeline and warms it up (one short batch) before it answers:
            # an engine that crashes on this CPU does so here, as a load failure, not on a
            # client's request.
            try:
                reply = self._read()[0]
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
                if error:
                    log.warning("engine failed a sequence", extra={"seq": seq_id, "error": error})
                lps, prompt = [*rest, None, None][:2]
                merged[seq_id] = _merge(merged.get(seq_id), seq_id, tokens, finished, lps, prompt)
        return list(merged.values())

    def _send(self, message: dict[str, Any]) -> None:
        data = memoryview(_frame(message))
        with self._lock:
            self._check()
            try:
                while data:
                    data = data[os.write(self._tx, data) :]
            except OSError as exc:
                self._died(repr(exc))

    def _read(self, *, wakeable: bool = False) -> list[dict[str, Any]]:
        """Every complete message the child has sent; blocks until there is at least one, or,
        when ``wakeable``, until ``interrupt()``."""
        self._check()
        frames: list[dict[str, Any]] = []
        try:
            while True:
                frames.extend(_split_frames(self._buffer))
                if frames and not _readable(self._rx, 0):
                    return frames
                if wakeable and not frames:
                    ready = select.select([self._rx, self._wake_read], [], [])[0]  # without the GIL
                    if self._wake_read in ready:
                        self._drain_wakes()
                        if self._rx not in ready:
                            return frames
                data = os.read(self._rx, 1 << 16)  # waits without the GIL
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
                    os.write(self._tx, _frame({"op": "close"}))
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
                    os.close(fd)


def _stderr_fd() -> int:
    try:
        return sys.__stderr__.fileno() if sys.__stderr__ is not None else subprocess.DEVNULL
    except (OSError, ValueError):
        return subprocess.DEVNULL


class LocalPipeline:
    """The same pipeline in the calling process, behind the same interface as ``PipelineProcess``.

    Its steps hold the GIL, so the daemon does not serve with it unless a model asks
    (``pipeline_process = false``); it is how the benchmark drives the pipeline offline.
    """

    def __init__(
        self,
        model_dir: Path,
        device: str,
        properties: dict[str, Any],
        scheduler: dict[str, Any],
        fault: str | None = None,
    ) -> None:
        init = {
            "model_dir": str(model_dir),
            "device": device,
            "properties": properties,
            "scheduler": scheduler,
        }
        try:
            self._engine: _Engine | None = _Engine(init)
            self.precision: str | None = self._engine.warm_up()
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO GenAI cannot load the model: {exc}") from exc
        self.pid = os.getpid()
        self.kv_cache_bytes = self._engine.kv_bytes()

    @property
    def alive(self) -> bool:
        return self._engine is not None

    def rss_bytes(self) -> int:
        """0: the pipeline shares this process, whose memory is not the model's alone."""
        return 0

    def _running(self) -> _Engine:
        if self._engine is None:
            raise ModelUnavailable("this OpenVINO pipeline was closed")
        return self._engine

    def add(self, seq_id: int, prompt_ids: Sequence[int], config: dict[str, Any]) -> None:
        try:
            self._running().add(seq_id, list(prompt_ids), config)
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO GenAI refused sequence {seq_id}: {exc}") from exc

    def cancel(self, seq_id: int) -> None:
        self._running().cancel(seq_id)

    def interrupt(self) -> None:
        """Nothing to wake: a step here computes, it never waits."""

    def step(self) -> list[Output]:
        engine = self._running()
        outputs = engine.step()
        self.kv_cache_bytes = engine.kv_bytes()
        for seq_id, _, _, error, _, _ in outputs:
            if error:
                log.warning("engine failed a sequence", extra={"seq": seq_id, "error": error})
        return [
            _merge(None, seq_id, tokens, finished, lps, prompt)
            for seq_id, tokens, finished, _, lps, prompt in outputs
        ]

    def close(self) -> None:
        self._engine = None


# -- the child's side ---------------------------------------------------------------------------


class _Engine:
    """The pipeline and its requests' handles, in the child."""

    def __init__(self, init: dict[str, Any]) -> None:
        import openvino_genai as ov_genai

        scheduler = ov_genai.SchedulerConfig()
        for name, value in init["scheduler"].items():
            setattr(scheduler, name, value)
        self._pipeline = ov_genai.ContinuousBatchingPipeline(
            init["model_dir"], scheduler, init["device"], dict(init["properties"])
        )
        self._handles: dict[int, Any] = {}
        self._logprobs: dict[int, int] = {}  # sequences that asked for logprobs: echo's prompt length
        self._status = ov_genai.GenerationStatus
        self._finish = ov_genai.GenerationFinishReason
        self._device = str(init["device"])
        self._properties = dict(init["properties"])
        self._fault = init.get("fault")

    def warm_up(self) -> str:
        """Run one short batch (two prompts of a few tokens, two new tokens each) to the end,
        so a pipeline that cannot compute on this machine fails now; returns the precision the
        device computes in."""
        import numpy as np
        import openvino as ov

        if self._fault == "warmup":  # tests only (see openvino_backend._test_fault)
            os.kill(os.getpid(), signal.SIGFPE)
        config = generation_config(
            {"max_new_tokens": 2, "min_new_tokens": 2, "ignore_eos": True, "do_sample": False}
        )
        handles = [
            self._pipeline.add_request(_WARM_UP_ID + i, ov.Tensor(np.asarray([ids], dtype=np.int64)), config)
            for i, ids in enumerate(([1, 2, 3], [3, 2, 1, 2, 3]))
        ]
        for _ in range(64):  # two prefills and two decodes, with room to spare
            if not self._pipeline.has_non_finished_requests():
                break
            self._pipeline.step()
        for handle in handles:
            if handle.get_status() == self._status.RUNNING:
                handle.cancel()
            elif handle.get_status() == self._status.IGNORED:
                raise RuntimeError("the warm-up prompt does not fit the KV cache")
        return self.precision()

    def precision(self) -> str:
        """What the device computes in: the hint given, else the plugin's default here."""
        from hfd.backends.openvino_cpu import precision_name

        if "INFERENCE_PRECISION_HINT" in self._properties:
            return precision_name(self._properties["INFERENCE_PRECISION_HINT"])
        try:
            import openvino as ov

            return precision_name(ov.Core().get_property(self._device, "INFERENCE_PRECISION_HINT"))
        except Exception:
            return "unknown"

    @property
    def busy(self) -> bool:
        return bool(self._handles)

    def add(self, seq_id: int, ids: list[int], params: dict[str, Any]) -> None:
        import numpy as np
        import openvino as ov

        tensor = ov.Tensor(np.asarray([ids], dtype=np.int64))
        self._handles[seq_id] = self._pipeline.add_request(seq_id, tensor, generation_config(params))
        if params.get("logprobs"):
            # With echo, GenAI's first output starts with the prompt (and its logprobs, the
            # first a placeholder): that many leading ids are split off as the prompt's.
            self._logprobs[seq_id] = len(ids) if params.get("echo") else 0

    def cancel(self, seq_id: int) -> None:
        handle = self._handles.pop(seq_id, None)
        self._logprobs.pop(seq_id, None)
        if handle is not None:
            handle.cancel()  # frees its KV blocks at the next step

    def step(self) -> list[list[Any]]:
        stepped = self._pipeline.has_non_finished_requests()
        if stepped:
            self._pipeline.step()
        outputs: list[list[Any]] = []
        for seq_id, handle in list(self._handles.items()):
            tokens: list[int] = []
            reason = None
            lps: list[float] | None = None if seq_id not in self._logprobs else []
            if handle.can_read():
                for out in handle.read().values():
                    tokens.extend(int(t) for t in out.generated_ids)
                    if lps is not None:
                        lps.extend(float(x) for x in out.generated_log_probs)
                    reason = out.finish_reason
            prompt: list[float] | None = None
            echo = self._logprobs.get(seq_id, 0)
            if echo and lps is not None and len(tokens) >= echo:
                prompt, lps, tokens = lps[:echo], lps[echo:], tokens[echo:]
                self._logprobs[seq_id] = 0
            status = handle.get_status()
            finished = None
            if status != self._status.RUNNING:
                finished = self._finish_reason(status, reason)
                del self._handles[seq_id]
            elif not stepped:  # the pipeline has no work for a handle it calls running: never spin
                finished = "error"
                del self._handles[seq_id]
            if finished is not None:
                self._logprobs.pop(seq_id, None)
            if tokens or finished is not None or prompt is not None:
                error = "the prompt does not fit the KV cache" if status == self._status.IGNORED else None
                outputs.append([seq_id, tokens, finished, error, lps, prompt])
        return outputs

    def _finish_reason(self, status: Any, reason: Any) -> str:
        if status == self._status.IGNORED:
            return "error"
        if status in (self._status.CANCEL, self._status.STOP):
            return "cancelled"
        return "length" if reason == self._finish.LENGTH else "stop"

    def kv_bytes(self) -> int:
        try:
            return int(self._pipeline.get_metrics().kv_cache_size_in_bytes)
        except Exception:
            return 0


class _Channel:
    """The child's ends of the pipes: reads into an inbox, writes while still reading."""

    def __init__(self, rx: int, tx: int) -> None:
        self._rx, self._tx = rx, tx
        self._buffer = bytearray()
        self.inbox: list[dict[str, Any]] = []
        self.closed = False

    def receive(self, timeout: float | None) -> None:
        """Move what the parent sent into the inbox, waiting up to ``timeout`` (None: for ever)."""
        while not self.closed and _readable(self._rx, timeout):
            data = os.read(self._rx, 1 << 16)
            if not data:
                self.closed = True
            self._buffer += data
            self.inbox.extend(_split_frames(self._buffer))
            timeout = 0

    def send(self, message: dict[str, Any]) -> None:
        data = memoryview(_frame(message))
        while data:
            readable, writable, _ = select.select([] if self.closed else [self._rx], [self._tx], [])
            if readable:
                self.receive(0)
            if writable:
                data = data[os.write(self._tx, data[: 1 << 16]) :]


def _serve(channel: _Channel) -> int:
    engine: _Engine | None = None
    # Requests added since the parent's last step() call: they reach the pipeline together at its
    # next "go", as they would in-process, so what shares a first step does not depend on how
    # the pipe happened to deliver them (GenAI's seeded sampling depends on it).
    held: dict[int, dict[str, Any]] = {}
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
                try:
                    engine = _Engine(message)
                    precision = engine.warm_up()
                except Exception as exc:
                    engine = None
                    channel.send({"error": f"OpenVINO GenAI cannot load the model: {exc}"})
                    continue
                channel.send({"ok": True, "precision": precision, "kv": engine.kv_bytes()})
            elif engine is not None and op == "add":
                held[int(message["id"])] = message
            elif engine is not None and op == "cancel":
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
            if outputs:
                channel.send({"out": outputs, "kv": engine.kv_bytes()})


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        return _serve(_Channel(int(argv[0]), int(argv[1])))
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
