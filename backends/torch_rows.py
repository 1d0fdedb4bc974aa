"""What the torch batchers share about their rows: a sequence's state (``_Sequence``), the checks
it passes on joining (``new_sequence``), how a produced token is accepted and recorded in the
step's outputs (``accept``, ``record``), whose turn a step is (``Turns``) and the queue half of the
``GenerationModel`` calls (``RowBatcher``: ``add``, ``cancel``, ``has_work``, ``step``).

``ContinuousBatcher`` (``torch_batcher``, and the seq2seq batcher built on it) and
``RecurrentBatcher`` (``torch_recurrent``) differ in how rows are prefilled and decoded, not in
any of this.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from hfd.backends.base import FinishReason, SamplingParams, StepOutput
from hfd.backends.constraints import TokenMatcher
from hfd.backends.logprobs import TokenLogprob
from hfd.backends.prompt_checks import check_sequence
from hfd.backends.torch_penalties import Penalties
from hfd.backends.torch_sampling import RowSampling, make_generator
from hfd.client.errors import InvalidRequest


@dataclass
class _Sequence:
    seq_id: int
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator | None
    generated: int = 0
    last_token: int = -1
    matcher: TokenMatcher | None = None  # its own position in params.constraint
    penalties: Penalties | None = None  # penalty settings and its output's token counts
    output: list[int] = field(default_factory=list)  # the tokens produced so far

    def sampling(self) -> RowSampling:
        return RowSampling(
            temperature=self.params.temperature,
            top_p=self.params.top_p,
            generator=self.generator,
            mask_eos=self.generated < self.params.min_tokens,
            matcher=self.matcher,
            logprobs=self.params.logprobs,
            penalties=self.penalties,
        )


def new_sequence(
    seq_id: int, prompt_ids: Sequence[int], params: SamplingParams, context_length: int
) -> _Sequence:
    """A queued sequence, after the checks every engine makes on a request."""
    prompt = check_sequence(prompt_ids, params, context_length)
    generator = None if params.greedy else make_generator(params.seed)
    matcher = None if params.constraint is None else params.constraint.matcher()
    penalties = Penalties.of(params, prompt)
    return _Sequence(seq_id, prompt, params, generator, matcher=matcher, penalties=penalties)


def accept(
    seq: _Sequence, token: int, eos_token_ids: frozenset[int], context_length: int
) -> FinishReason | None:
    """Record a produced token; the finish reason when it ends the sequence."""
    seq.generated += 1
    seq.last_token = token
    seq.output.append(token)
    p = seq.params
    if token in eos_token_ids and not p.ignore_eos and seq.generated > p.min_tokens:
        return "stop"
    if seq.matcher is not None and seq.matcher.finished:  # the grammar is complete
        return "stop"
    if seq.generated >= p.max_tokens:
        return "length"
    if len(seq.prompt) + seq.generated >= context_length:
        return "length"
    return None


def _one(entry: TokenLogprob | None) -> list[TokenLogprob] | None:
    return None if entry is None else [entry]


def record(
    out: dict[int, StepOutput],
    seqs: Sequence[_Sequence],
    tokens: Sequence[int],
    lps: Sequence[TokenLogprob | None],
    accept_token: Callable[[_Sequence, int], FinishReason | None],
    known: set[int],
    prompt_lps: dict[int, list[TokenLogprob | None]] | None = None,
) -> list[int]:
    """Each row's sampled token, accepted and put in the step's outputs: a row that already has
    an output this step (it joined in this step's prefill) gets the token appended. Returns the
    rows (indices into ``seqs``) that finished; their ids leave ``known``."""
    done: list[int] = []
    for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
        finished = accept_token(seq, token)
        prev = out.get(seq.seq_id)
        if prev is not None:  # its prefill token comes first
            prev.token_ids.append(token)
            prev.finished = finished
            if prev.logprobs is not None and lps[i] is not None:
                prev.logprobs.append(lps[i])  # type: ignore[arg-type]
        else:
            echo = None if prompt_lps is None else prompt_lps.get(i)
            out[seq.seq_id] = StepOutput(seq.seq_id, [token], finished, _one(lps[i]), echo)
        if finished is not None:
            done.append(i)
            known.discard(seq.seq_id)
    return done


class Turns:
    """Whose turn a torch batcher's step is: newcomers' prefill or the running rows' decode.

    A step does one or the other, never both: a request that arrives while long generations run
    gets its first token after its own prefill, not after a decode of the whole batch as well
    (that doubled its time to first token). A decode is owed after every prefill, so a stream of
    arrivals cannot starve running rows. Both torch batchers step by this one rule.
    """

    def __init__(self) -> None:
        self.decode_owed = False

    def next(self, waiting: bool, running: int, max_running: int) -> Literal["prefill", "decode"] | None:
        if waiting and running < max_running and not (self.decode_owed and running):
            self.decode_owed = True
            return "prefill"
        if running:
            self.decode_owed = False
            return "decode"
        return None


class RowBatcher:
    """The queue half of a torch batcher: sequences wait in ``_queue`` until a prefill takes
    them into ``_rows`` (running, in the subclass's order); ``_known`` holds every id not ended.
    Subclasses give ``_prefill``, ``_decode``, ``_cancel_running`` and ``_after_step``."""

    _rows: list[Any]

    def __init__(
        self,
        model: Any,
        *,
        device: torch.device,
        context_length: int,
        eos_token_ids: frozenset[int],
        max_running: int,
        max_batched_tokens: int,
    ) -> None:
        self.model = model
        self.device = device
        self.context_length = context_length
        self.eos_token_ids = eos_token_ids
        self.max_running = max(1, max_running)
        self.max_batched_tokens = max(1, max_batched_tokens)
        self._eos = torch.tensor(sorted(eos_token_ids), dtype=torch.long, device=device)
        self._queue: deque[_Sequence] = deque()
        self._turns = Turns()
        self._known: set[int] = set()
        self.prefilled_tokens = 0  # prompt tokens run through prefill forward passes, padding aside

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if seq_id in self._known:
            raise InvalidRequest(f"sequence {seq_id} is already running")
        self._queue.append(new_sequence(seq_id, prompt_ids, params, self.context_length))
        self._known.add(seq_id)

    @torch.inference_mode()  # the caches and row tensors are inference tensors
    def cancel(self, seq_id: int) -> None:
        if seq_id not in self._known:
            return
        self._known.discard(seq_id)
        for seq in self._queue:
            if seq.seq_id == seq_id:
                self._queue.remove(seq)
                return
        self._cancel_running(seq_id)

    def has_work(self) -> bool:
        return bool(self._queue or self._rows)

    @torch.inference_mode()
    def step(self) -> list[StepOutput]:
        out: dict[int, StepOutput] = {}
        turn = self._turns.next(bool(self._queue), len(self._rows), self.max_running)
        if turn == "prefill":
            self._prefill(out)
        elif turn == "decode":
            self._decode(out)
        self._after_step()
        return list(out.values())

    def _reset_queue(self) -> None:
        self._turns = Turns()
        self._queue.clear()
        self._known.clear()

    def _accept(self, seq: _Sequence, token: int) -> FinishReason | None:
        return accept(seq, token, self.eos_token_ids, self.context_length)

    def _prefill(self, out: dict[int, StepOutput]) -> None:
        raise NotImplementedError

    def _decode(self, out: dict[int, StepOutput]) -> None:
        raise NotImplementedError

    def _cancel_running(self, seq_id: int) -> None:
        raise NotImplementedError

    def _after_step(self) -> None:
        """After every step (the batched cache trims its padding here)."""
