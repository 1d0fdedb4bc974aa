"""Continuous batching over a step-wise ``GenerationModel``.

One worker thread per model owns every engine call except the thread-safe tokenizer ones. It
loops: apply cancellations, admit waiting sequences (up to ``max_running`` rows; the engine
limits prefill tokens per step itself), ``engine.step()``, then decode each new token
incrementally, match stop strings, enforce ``max_tokens`` and hand the pieces to each request's
stream on its event loop. Sequences join and leave between any two steps. With nothing to do the
thread sleeps on a condition.

Pacing: a stream's chunks are at least ``stream_interval_ms`` apart; what a stream's steps make
meanwhile is held and goes out with its next chunk, so a fast engine costs the event loop, the
socket and the client one wake-up per interval rather than one per token. A stream's first chunk
and its last go at once; a held chunk goes out at the first step end after its interval, or with
the stream's end. An engine that paces its own outputs (``paces_stream``: OpenVINO's engine
process, which so also spares the daemon's worker its wake-ups) is passed on as it comes.

Back-pressure is on admission only: ``submit`` raises ``Overloaded`` when ``max_queue``
requests are already waiting for a row. Output buffers are unbounded (a request's output is
bounded by its ``max_tokens``), so a slow reader never stalls the batch.

How a stream ends:

- normally, with a last chunk whose ``finish_reason`` is "stop" (eos or a stop string) or
  "length";
- ``cancel()``/``aclose()`` by its reader: a last chunk with ``finish_reason`` "cancelled";
- the scheduler closing (model unloaded, daemon stopping): iteration raises ``Cancelled``;
- an engine failure: iteration raises ``InternalError``; the scheduler keeps serving others.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable

import anyio

from hfd.backends.base import GenerationModel, SamplingParams, StepOutput, interrupter, paces_stream
from hfd.client.errors import Cancelled, HfdError, InternalError, InvalidRequest, ModelUnavailable, Overloaded
from hfd.daemon.metrics import record_batch
from hfd.daemon.scheduler.base import GenerationStats, ThreadedScheduler
from hfd.daemon.scheduler.detok import IncrementalDetokenizer, StopMatcher
from hfd.daemon.scheduler.detok_logprobs import texted
from hfd.daemon.scheduler.streams import GenerationStream, TokenChunk, deliver

__all__ = ["GenerationScheduler", "GenerationStream", "TokenChunk"]

log = logging.getLogger(__name__)
_STOP_WAIT_S = 30.0  # how long a closing scheduler waits for its worker to leave engine.step()

_ids = itertools.count(1)


class _Seq:
    """A request as the worker thread sees it."""

    __slots__ = ("detok", "generated", "held", "params", "prompt_ids", "sent_at", "seq_id", "stop", "stream",
                 "submitted")  # fmt: skip

    def __init__(
        self,
        seq_id: int,
        prompt_ids: list[int],
        params: SamplingParams,
        stream: GenerationStream,
        detok: IncrementalDetokenizer,
    ) -> None:
        self.seq_id = seq_id
        self.prompt_ids = prompt_ids
        self.params = params
        self.stream = stream
        self.detok = detok
        self.stop = StopMatcher(params.stop)
        self.generated = 0
        self.submitted = time.perf_counter()
        self.held: TokenChunk | None = None  # output not yet sent: its stream's interval is not over
        self.sent_at: float | None = None  # when its last chunk was handed on (None: none yet)


class GenerationScheduler(ThreadedScheduler[GenerationModel]):
    thread_tag = "gen"

    def __init__(
        self,
        model: GenerationModel,
        *,
        name: str,
        max_queue: int,
        max_running: int,
        stream_interval_ms: float = 0.0,
    ) -> None:
        if max_queue < 1 or max_running < 1:
            raise ValueError("max_queue and max_running must be at least 1")
        if not 0 <= stream_interval_ms < float("inf"):
            raise ValueError("stream_interval_ms must be a finite number, 0 or more")
        super().__init__(model, name=name, max_queue=max_queue)
        # Optional on engines: wakes a step() that waits on another process (see backends.base).
        self._interrupt: Callable[[], None] | None = interrupter(model)
        self.max_running = max_running
        # A model that paces itself was given the interval at its load (LoadOptions).
        self._interval_s = 0.0 if paces_stream(model) else stream_interval_ms / 1000
        self._holding: set[int] = set()  # worker thread only: running sequences with a held chunk
        # Guarded by _cond: requests not yet admitted, cancellations to apply (and the stop flag).
        self._waiting: collections.deque[_Seq] = collections.deque()
        self._cancels: set[int] = set()
        # Worker thread only.
        self._running: dict[int, _Seq] = {}
        # Counters for stats(); written by the worker, read anywhere (ints: atomic enough).
        self._steps = 0
        self._rows = 0
        self._tokens = 0
        self._finished = 0
        self._step_seconds = 0.0
        self._ema_request_seconds = 0.0

    # ----------------------------------------------------------------- public API

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationStream:
        """Queue a request; call on the event loop. Raises ``Overloaded`` when the queue is full."""
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if params.max_tokens < 1:
            raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
        if self._closed:
            raise ModelUnavailable(f"model {self.name!r} is unloading", retry_after=1.0)
        request_id = next(_ids)
        stream = GenerationStream(self, request_id, len(prompt_ids))
        # An encoder-decoder's output does not continue its prompt: no prompt text in front.
        context = () if getattr(self.model, "encoder_decoder", False) else prompt_ids
        seq = _Seq(
            request_id, list(prompt_ids), params, stream, IncrementalDetokenizer(self.model.decode, context)
        )
        with self._cond:
            if len(self._waiting) >= self.max_queue:
                self._rejected += 1
                raise Overloaded(
                    f"model {self.name!r} has {len(self._waiting)} requests waiting; retry later",
                    retry_after=self._retry_after(),
                )
            self._waiting.append(seq)
            self._active += 1
            self._cond.notify()
        # An engine whose step() waits on another process can return early, so the newcomer is
        # added while the current step still computes and joins the very next one.
        if self._interrupt is not None and len(self._running) < self.max_running:
            self._interrupt()
        return stream

    def stats(self) -> GenerationStats:
        steps = self._steps
        return GenerationStats(
            waiting=len(self._waiting),
            running=len(self._running),
            active=self._active,
            max_running=self.max_running,
            max_queue=self.max_queue,
            steps=steps,
            tokens_generated=self._tokens,
            requests_finished=self._finished,
            requests_rejected=self._rejected,
            errors=self._errors,
            mean_batch_size=round(self._rows / steps, 3) if steps else 0.0,
            mean_step_ms=round(1000 * self._step_seconds / steps, 3) if steps else 0.0,
        )

    async def aclose(self, grace: float = 0.0) -> None:
        """Let running work finish for up to ``grace`` seconds, cancel the rest, stop the thread."""
        self._closed = True
        if grace > 0:
            await anyio.to_thread.run_sync(self._wait_idle, grace)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        thread = self._thread
        if thread is not None:
            # An engine stuck inside a step must not hold the daemon's shutdown for ever; the
            # thread is a daemon thread, and closing the model (next) ends an engine process.
            await anyio.to_thread.run_sync(thread.join, _STOP_WAIT_S)
            if thread.is_alive():
                log.error("generation worker did not stop; leaving it", extra={"model": self.name})
            self._thread = None
        else:
            self._abort_all()

    def _wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, timeout)

    # ----------------------------------------------------------------- cancellation

    def _cancel(self, request_id: int) -> None:
        with self._cond:
            for seq in self._waiting:
                if seq.seq_id == request_id:
                    # Never reached the engine: finish it here, without waking the worker.
                    self._waiting.remove(seq)
                    self._active -= 1
                    if not self._active:
                        self._cond.notify_all()  # aclose() may be waiting for idle
                    deliver([(seq.stream, TokenChunk("", [], "cancelled"))])
                    return
            self._cancels.add(request_id)
            self._cond.notify()

    # ----------------------------------------------------------------- worker thread

    def _run(self) -> None:
        log.debug("generation worker started", extra={"model": self.name})
        try:
            while True:
                with self._cond:
                    while not (self._stopping or self._waiting or self._cancels or self._running):
                        self._cond.wait()
                    if self._stopping:
                        break
                    cancels, self._cancels = self._cancels, set()
                    room = self.max_running - (len(self._running) - len(cancels & self._running.keys()))
                    admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
                out: list[tuple[GenerationStream, TokenChunk | HfdError]] = []
                for seq_id in cancels:
                    gone = self._running.get(seq_id)
                    if gone is not None:
                        self._engine_cancel(seq_id)
                        self._finish(gone, out, TokenChunk(self._flush(gone), [], "cancelled"))
                for seq in admitted:
                    self._admit(seq, out)
                if self._running:
                    self._step(out)
                deliver(out)
        except BaseException:  # a bug here must not leave readers waiting forever
            log.exception("generation worker crashed", extra={"model": self.name})
            raise
        finally:
            self._abort_all()
            log.debug("generation worker stopped", extra={"model": self.name})

    def _admit(self, seq: _Seq, out: list[tuple[GenerationStream, TokenChunk | HfdError]]) -> None:
        try:
            self.model.add(seq.seq_id, seq.prompt_ids, seq.params)
        except Exception as exc:
            log.exception("engine refused a sequence", extra={"model": self.name, "seq": seq.seq_id})
            self._errors += 1
            self._engine_cancel(seq.seq_id)
            self._finish(seq, out, _engine_error(exc))
            return
        self._running[seq.seq_id] = seq

    def _step(self, out: list[tuple[GenerationStream, TokenChunk | HfdError]]) -> None:
        started = time.perf_counter()
        rows = len(self._running)
        try:
            outputs = self.model.step()
        except Exception as exc:
            # The batch's state is unknown: fail what ran, free it, go on with new requests.
            log.exception("engine step failed", extra={"model": self.name, "running": rows})
            self._errors += 1
            for seq in list(self._running.values()):
                self._engine_cancel(seq.seq_id)
                self._finish(seq, out, _engine_error(exc))
            return
        if not outputs:
            self._release_due(out)
            return  # woken by interrupt() before the engine finished a step
        self._steps += 1
        self._rows += rows
        record_batch(self.name, "generation", rows)  # hfd_batch_size
        self._step_seconds += time.perf_counter() - started
        for output in outputs:
            owner = self._running.get(output.seq_id)
            if owner is not None:  # None: cancelled meanwhile, its output is dropped
                self._on_output(owner, output, out)
        self._release_due(out)

    def _on_output(
        self, seq: _Seq, output: StepOutput, out: list[tuple[GenerationStream, TokenChunk | HfdError]]
    ) -> None:
        if output.finished == "error":
            self._errors += 1
            self._finish(seq, out, InternalError(f"the engine failed sequence {seq.seq_id}"))
            return
        tokens = list(output.token_ids)
        room = seq.params.max_tokens - seq.generated
        if len(tokens) > room:  # an engine emitting several tokens per step may overshoot
            tokens = tokens[:room]
        lps = None if output.logprobs is None else texted(self.model.decode, output.logprobs[: len(tokens)])
        prompt_lps = None
        if output.prompt_logprobs is not None:
            prompt_lps = texted(self.model.decode, output.prompt_logprobs)
        seq.generated += len(tokens)
        self._tokens += len(tokens)
        capped = output.finished is None and seq.generated >= seq.params.max_tokens
        piece = seq.detok.push(tokens)
        if output.finished is not None or capped:
            piece += seq.detok.flush()
        text = seq.stop.push(piece, match=seq.generated >= seq.params.min_tokens)
        finish: str | None
        if seq.stop.stopped:
            finish = "stop"
        elif output.finished is not None:
            finish = output.finished
        elif capped:
            finish = "length"
        else:
            self._send(seq, TokenChunk(text, tokens, None, lps, prompt_lps), out)
            return
        if output.finished is None:  # the engine still holds it: a stop string or our length cap
            self._engine_cancel(seq.seq_id)
        last = TokenChunk(text + seq.stop.flush(), tokens, finish, lps, prompt_lps, seq.stop.matched)
        self._finish(seq, out, last)

    def _send(
        self, seq: _Seq, chunk: TokenChunk, out: list[tuple[GenerationStream, TokenChunk | HfdError]]
    ) -> None:
        """Hold a chunk (after what is held) until its stream's interval is over: the step's end
        hands it on (``_release_due``); a stream's first chunk is due at once."""
        seq.held = chunk if seq.held is None else seq.held.then(chunk)
        self._holding.add(seq.seq_id)

    def _release_due(self, out: list[tuple[GenerationStream, TokenChunk | HfdError]]) -> None:
        """Held chunks whose interval is over go now, whether their sequence had output this
        step or not (an engine's prefill step, say, has none for the others)."""
        if not self._holding:
            return
        now = time.monotonic()
        for seq_id in list(self._holding):
            seq = self._running[seq_id]
            if seq.held is not None and (seq.sent_at is None or now - seq.sent_at >= self._interval_s):
                self._holding.discard(seq_id)
                out.append((seq.stream, seq.held))
                seq.held, seq.sent_at = None, now

    def _flush(self, seq: _Seq) -> str:
        return seq.stop.push(seq.detok.flush(), match=False) + seq.stop.flush()

    def _finish(
        self,
        seq: _Seq,
        out: list[tuple[GenerationStream, TokenChunk | HfdError]],
        last: TokenChunk | HfdError,
    ) -> None:
        self._running.pop(seq.seq_id, None)
        held, seq.held = seq.held, None
        self._holding.discard(seq.seq_id)
        if held is not None and isinstance(last, TokenChunk):
            last = held.then(last)
        elif held is not None:  # the tokens made before a failure still reach the reader first
            out.append((seq.stream, held))
        out.append((seq.stream, last))
        self._finished += 1
        seconds = time.perf_counter() - seq.submitted
        self._ema_request_seconds = (
            seconds if not self._ema_request_seconds else 0.9 * self._ema_request_seconds + 0.1 * seconds
        )
        with self._cond:
            self._active -= 1
            if not self._active:
                self._cond.notify_all()  # aclose() may be waiting for idle

    def _engine_cancel(self, seq_id: int) -> None:
        try:
            self.model.cancel(seq_id)
        except Exception:
            log.exception("engine cancel failed", extra={"model": self.name, "seq": seq_id})

    def _abort_all(self) -> None:
        """Stopping: end every request still here with ``Cancelled``."""
        out: list[tuple[GenerationStream, TokenChunk | HfdError]] = []
        for seq in list(self._running.values()):
            self._engine_cancel(seq.seq_id)
            self._finish(seq, out, Cancelled(f"model {self.name!r} was unloaded before the request finished"))
        with self._cond:
            waiting, self._waiting = list(self._waiting), collections.deque()
            self._active -= len(waiting)
        for seq in waiting:
            out.append(
                (seq.stream, Cancelled(f"model {self.name!r} was unloaded before the request started"))
            )
        deliver(out)

    def _retry_after(self) -> float:
        """A guess of when a row frees up: a typical request's time spread over the rows."""
        per_row = self._ema_request_seconds / max(1, self.max_running) if self._ema_request_seconds else 1.0
        return round(min(60.0, max(0.1, per_row * max(1, len(self._waiting)))), 3)


def _engine_error(exc: BaseException) -> HfdError:
    """The error a request fails with: the engine's own when it speaks ours (a prompt it refuses),
    else ``InternalError``."""
    if isinstance(exc, HfdError):
        return exc
    err = InternalError(f"the engine failed: {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
