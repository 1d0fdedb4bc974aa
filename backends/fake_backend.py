"""A deterministic fake engine, so the schedulers, the manager and the doors can be tested
without torch, fast, and with failures on demand.

It implements the same ``EncoderModel`` and ``GenerationModel`` protocols as the real engines
with no model at all:

- Tokenizer: a prompt's UTF-8 bytes, one token each (id = byte + 3; 0 pad, 1 bos, 2 eos), no
  transformers. Generated tokens are words (ids from ``WORD_BASE``; each decodes to a space and
  three letters), so a streamed piece is several characters, as with a real tokenizer.
- Generation: the k-th token of a sequence is a hash of its prompt ids and k (and the seed when
  sampling), so a sequence's tokens never depend on what else is in the batch. ``eos_after``
  ends a sequence with eos after that many tokens (unless ``ignore_eos``).
- Logprobs (and the prompt's, for echo): deterministic, from the same hashes; the chosen token
  is always the most likely one (its logprob in (-1, 0]), then the next ``k - 1`` words, a nat
  apart each. Penalties and ``logit_bias`` are not implemented (not in ``capabilities``).
- Embeddings: tokens are whitespace-separated words (between bos and eos); the vector is a unit
  vector derived from a hash of the (truncated) token ids, i.e. of the text.

Load options (the model's ``options`` table, ``LoadOptions.extra``), all optional:

=================  =======================================================================
``step_ms``        latency of each generation ``step()`` (default 0); ``interrupt()`` cuts it
``batch_ms``       latency of each ``embed()`` batch (default 0)
``load_ms``        latency of the load itself (default 0), to hold a load in ``hfd ps``: a third
                   each in ``loading``, ``compiling`` and ``warming``
``fail_at_load``   raise ``ModelUnavailable`` from the load (a text is used as the message)
``fail_at_step``   the N-th ``step()`` (1-based) raises ``RuntimeError``; later steps work
``fail_at_batch``  the N-th ``embed()`` raises ``RuntimeError``
``die_at_step``    at the N-th ``step()`` the engine "dies": ``alive`` turns False and every
                   later call raises, as an engine process killed by the OOM killer
``eos_after``      emit eos as the N-th generated token
``dimensions``     embedding size (default 8); ``max_length`` tokens per input (default 512)
``context_length`` (default 2048); ``memory_bytes`` reported (default 1 MiB)
=================  =======================================================================

The snapshot directory is not read: any path works. The policy never chooses this engine unless
it is pinned (``engine = "fake"``) or ``HFD_FAKE_ENGINE=1`` is set (see ``registry``).
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np

from hfd.backends import load_progress
from hfd.backends.base import (
    EncoderModel,
    FinishReason,
    GenerationModel,
    LoadOptions,
    SamplingParams,
    StepOutput,
    Task,
    TokenizedBatch,
)
from hfd.backends.capabilities import LOGPROBS, PROMPT_LOGPROBS, TOP_LOGPROBS
from hfd.backends.logprobs import TokenLogprob
from hfd.backends.prompt_checks import check_sequence
from hfd.client.errors import InvalidRequest, ModelUnavailable

if TYPE_CHECKING:
    from hfd.backends.hardware import EngineProbe

NAME = "fake"
PAD, BOS, EOS = 0, 1, 2
BYTE_BASE = 3  # ids 3..258: the bytes of a prompt
WORD_BASE = BYTE_BASE + 256  # ids from here: generated words
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
WORDS: tuple[str, ...] = tuple(
    c1 + v + c2 for c1, v, c2 in itertools.product(_CONSONANTS, _VOWELS, _CONSONANTS)
)
_MiB = 1 << 20


@cache
def probe() -> EngineProbe:
    """The fake engine is always there, on a CPU of its own (no library to find)."""
    from hfd.backends.hardware import Device, EngineProbe

    return EngineProbe(
        name=NAME,
        installed=True,
        version="0",
        devices=(Device(engine=NAME, id="cpu", kind="cpu", name="fake cpu"),),
    )


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


def _int(opts: LoadOptions, key: str, default: int) -> int:
    value = opts.extra.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"fake engine option {key!r} must be an integer, got {value!r}") from None


def _ms(opts: LoadOptions, key: str) -> float:
    value = opts.extra.get(key, 0)
    try:
        return max(0.0, float(value)) / 1000.0
    except (TypeError, ValueError):
        raise InvalidRequest(f"fake engine option {key!r} must be a number, got {value!r}") from None


class Tokenizer:
    """Bytes in, words out; thread-safe (no state)."""

    @staticmethod
    def encode(text: str) -> list[int]:
        return [BYTE_BASE + b for b in text.encode("utf-8")]

    @staticmethod
    def decode(ids: Sequence[int]) -> str:
        out: list[str] = []
        pending = bytearray()
        for t in ids:
            t = int(t)
            if BYTE_BASE <= t < WORD_BASE:
                pending.append(t - BYTE_BASE)
                continue
            if pending:
                out.append(pending.decode("utf-8", errors="replace"))
                pending.clear()
            if t >= WORD_BASE:
                out.append(" " + WORDS[(t - WORD_BASE) % len(WORDS)])
            # pad, bos and eos are special: skipped
        if pending:
            out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)


class _Faults:
    """Failures injected through load options; counts calls of one kind."""

    def __init__(self, opts: LoadOptions, fail_key: str) -> None:
        self.fail_at = _int(opts, fail_key, 0)
        self.die_at = _int(opts, "die_at_step", 0) if fail_key == "fail_at_step" else 0
        self.calls = 0
        self.dead = False

    def tick(self) -> None:
        if self.dead:
            raise RuntimeError("fake engine is dead")
        self.calls += 1
        if self.calls == self.die_at:
            self.dead = True
            raise RuntimeError(f"fake engine died at step {self.calls}")
        if self.calls == self.fail_at:
            raise RuntimeError(f"fake engine failed at call {self.calls}")


class _Model:
    name = NAME
    device = "cpu"

    def __init__(self, opts: LoadOptions) -> None:
        self.opts = opts
        self._memory = _int(opts, "memory_bytes", _MiB)
        self._closed = False
        # interrupt() sets it to cut a latency short (see base.GenerationModel.interrupt).
        self._wake = threading.Event()

    @property
    def alive(self) -> bool:
        return not self._faults.dead

    def interrupt(self) -> None:
        self._wake.set()

    def memory_bytes(self) -> int:
        return 0 if self._closed else self._memory

    def close(self) -> None:
        self._closed = True

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False when ``interrupt()`` cut the wait short."""
        if seconds <= 0:
            return True
        woken = self._wake.wait(seconds)
        self._wake.clear()
        return not woken

    _faults: _Faults


class FakeEncoder(_Model):
    def __init__(self, opts: LoadOptions) -> None:
        super().__init__(opts)
        self.dimensions = _int(opts, "dimensions", 8)
        self.max_length = _int(opts, "max_length", 512)
        if self.dimensions < 1 or self.max_length < 2:
            raise InvalidRequest("fake engine: dimensions must be at least 1 and max_length 2")
        self._batch_s = _ms(opts, "batch_ms")
        self._faults = _Faults(opts, "fail_at_batch")

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        # One token per word between bos and eos, as a BERT tokenizer's [CLS] ... [SEP] would
        # give: lengths (what batching and padding depend on) are close to a real model's.
        rows = []
        for text in texts:
            words = [WORD_BASE + int.from_bytes(_digest(w)[:4], "little") % 30_000 for w in text.split()]
            rows.append([BOS, *words[: self.max_length - 2], EOS])
        return TokenizedBatch(rows)

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        self._sleep(self._batch_s)
        self._faults.tick()
        out = np.empty((len(batch.ids), self.dimensions), dtype=np.float32)
        for row, ids in enumerate(batch.ids):
            seed = int.from_bytes(_digest("embed", tuple(ids))[:8], "little")
            vector = np.random.default_rng(seed).standard_normal(self.dimensions)
            out[row] = vector / np.linalg.norm(vector)
        return out


@dataclass
class _Seq:
    prompt: tuple[int, ...]
    params: SamplingParams
    salt: object  # None when greedy: the stream is a function of the prompt alone
    generated: int = 0


def _logprob(seed: int, token: int, k: int) -> TokenLogprob:
    lp = -((seed >> 8) % 1000) / 1000.0
    top = [(token, lp)] + [(WORD_BASE + (seed + i) % len(WORDS), lp - i) for i in range(1, k)]
    return TokenLogprob(token, lp, tuple((t, v) for t, v in top[:k]))


def _prompt_logprobs(prompt: Sequence[int], k: int) -> list[TokenLogprob | None]:
    out: list[TokenLogprob | None] = [None]
    for j in range(1, len(prompt)):
        seed = int.from_bytes(_digest(tuple(prompt[: j + 1]))[:8], "little")
        out.append(_logprob(seed, int(prompt[j]), k))
    return out


class FakeGenerator(_Model):
    capabilities = frozenset({LOGPROBS, TOP_LOGPROBS, PROMPT_LOGPROBS})
    vocab_size = WORD_BASE + len(WORDS)

    def __init__(self, opts: LoadOptions) -> None:
        super().__init__(opts)
        self.context_length = _int(opts, "context_length", 2048)
        self.eos_token_ids = frozenset({EOS})
        self._eos_after = _int(opts, "eos_after", 0)
        self._step_s = _ms(opts, "step_ms")
        self._faults = _Faults(opts, "fail_at_step")
        self._max_running = max(1, opts.max_running)
        self._lock = threading.Lock()  # add/cancel may come from the worker only, but be safe
        self._running: dict[int, _Seq] = {}
        self._waiting: dict[int, _Seq] = {}

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        # No template: tools come as a system prompt (hfd.daemon.tools.render's fallback).
        text = "".join(f"<{m.get('role', 'user')}>{m.get('content') or ''}\n" for m in messages)
        return Tokenizer.encode(text + "<assistant>")

    def encode_prompt(self, text: str) -> list[int]:
        return Tokenizer.encode(text)

    def decode(self, token_ids: Sequence[int]) -> str:
        return Tokenizer.decode(token_ids)

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        prompt = tuple(check_sequence(prompt_ids, params, self.context_length, WORD_BASE + len(WORDS)))
        salt: object = None
        if not params.greedy:
            salt = ("seed", params.seed) if params.seed is not None else ("random", random.random())
        with self._lock:
            self._waiting[seq_id] = _Seq(prompt, params, salt)

    def cancel(self, seq_id: int) -> None:
        with self._lock:
            self._running.pop(seq_id, None)
            self._waiting.pop(seq_id, None)

    def has_work(self) -> bool:
        with self._lock:
            return bool(self._running or self._waiting)

    def step(self) -> list[StepOutput]:
        if not self._sleep(self._step_s):
            return []  # woken by interrupt(): let the scheduler add newcomers now
        self._faults.tick()
        with self._lock:
            while self._waiting and len(self._running) < self._max_running:
                seq_id = next(iter(self._waiting))
                self._running[seq_id] = self._waiting.pop(seq_id)
            outputs = [self._next(seq_id, seq) for seq_id, seq in self._running.items()]
            for out in outputs:
                if out.finished is not None:
                    del self._running[out.seq_id]
        return outputs

    def _next(self, seq_id: int, seq: _Seq) -> StepOutput:
        p = seq.params
        seq.generated += 1
        prompt = None
        if seq.generated == 1 and p.prompt_logprobs is not None:
            prompt = _prompt_logprobs(seq.prompt, p.prompt_logprobs)
        h = int.from_bytes(_digest(seq.prompt, seq.generated, seq.salt)[:8], "little")
        eos_due = self._eos_after and seq.generated >= self._eos_after
        finished: FinishReason | None = None
        if eos_due and not p.ignore_eos and seq.generated > p.min_tokens:
            token, finished = EOS, "stop"
        else:
            token = WORD_BASE + h % len(WORDS)
            if seq.generated >= p.max_tokens or len(seq.prompt) + seq.generated >= self.context_length:
                finished = "length"
        lps = None if p.logprobs is None else [_logprob(h, token, p.logprobs)]
        return StepOutput(seq_id, [token], finished, lps, prompt)


class FakeBackend:
    name = NAME
    tasks: frozenset[Task] = frozenset({"generate", "embed"})

    def available(self) -> tuple[bool, str]:
        return True, ""

    def devices(self) -> list[str]:
        return ["cpu"]

    def load_encoder(self, opts: LoadOptions) -> EncoderModel:
        _check_load(opts, "embed")
        return FakeEncoder(opts)

    def load_generator(self, opts: LoadOptions) -> GenerationModel:
        _check_load(opts, "generate")
        return FakeGenerator(opts)


def _check_load(opts: LoadOptions, task: Task) -> None:
    if opts.task != task:
        raise InvalidRequest(f"fake engine: load options are for {opts.task!r}, not {task!r}")
    if opts.device.strip().lower() not in ("cpu", ""):
        raise ModelUnavailable(f"fake engine: device {opts.device!r} is not available; it runs on 'cpu'")
    load_ms = float(opts.extra.get("load_ms") or 0)
    if load_ms > 0:  # a third each reading, "compiling" and "warming", as a real engine reports them
        time.sleep(load_ms / 3000)
        load_progress.report("compiling")
        time.sleep(load_ms / 3000)
        load_progress.report("warming")
        time.sleep(load_ms / 3000)
    fail = opts.extra.get("fail_at_load")
    if isinstance(fail, str) and fail.strip().lower() in ("0", "false", "no", "off", ""):
        fail = None
    if fail:
        raise ModelUnavailable(fail if isinstance(fail, str) else "fake engine: load failed (fail_at_load)")
