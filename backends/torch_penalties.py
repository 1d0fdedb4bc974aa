"""Per-row logit adjustments before sampling: OpenAI's presence and frequency penalties,
HF/vLLM's repetition penalty and ``logit_bias``, for the rows of a batch that ask for them.

Vectorised over rows: each penalised row's token counts go into one dense ``[rows, vocab]``
tensor with a single sparse ``index_put_`` (accumulating), and every penalty is then one
tensor expression for all rows. Semantics, as the references define them:

- ``frequency_penalty`` / ``presence_penalty`` (OpenAI): ``logit -= count * frequency +
  (count > 0) * presence``, ``count`` being how often the token was generated so far (the
  prompt does not count);
- ``repetition_penalty`` (HF ``RepetitionPenaltyLogitsProcessor``, vLLM): for every token seen
  in the prompt or the output, a positive logit is divided by it and a negative one multiplied;
- ``logit_bias``: added to the logit (``+100`` all but forces a token, ``-100`` bans it).

Repetition first, then frequency/presence, then the bias (vLLM's order).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from hfd.backends.base import SamplingParams


@dataclass
class Penalties:
    """One sequence's penalty settings and what it has produced (updated by ``push``)."""

    presence: float = 0.0
    frequency: float = 0.0
    repetition: float = 1.0
    bias: tuple[tuple[int, float], ...] = ()
    prompt: frozenset[int] = frozenset()  # for the repetition penalty only
    counts: Counter[int] = field(default_factory=Counter)

    @classmethod
    def of(cls, params: SamplingParams, prompt: Sequence[int]) -> Penalties | None:
        """None when the sequence asks for none (the sampler then skips it at no cost)."""
        if (
            not params.presence_penalty
            and not params.frequency_penalty
            and params.repetition_penalty == 1.0
            and not params.logit_bias
        ):
            return None
        return cls(
            presence=params.presence_penalty,
            frequency=params.frequency_penalty,
            repetition=params.repetition_penalty,
            bias=params.logit_bias,
            prompt=frozenset(int(t) for t in prompt) if params.repetition_penalty != 1.0 else frozenset(),
        )

    def push(self, token: int) -> None:
        self.counts[token] += 1


def apply(logits: torch.Tensor, rows: Sequence[int], penalties: Sequence[Penalties]) -> None:
    """Adjust ``logits`` (``[batch, vocab]`` float, in place) for the given rows."""
    n, vocab = len(rows), logits.shape[-1]
    device = logits.device
    idx = torch.tensor(rows, device=device)
    sub = logits.index_select(0, idx)
    counts = _dense(n, vocab, [p.counts.items() for p in penalties], device)

    rep = [p.repetition for p in penalties]
    if any(r != 1.0 for r in rep):
        seen = counts > 0
        prompt = _dense(n, vocab, [((t, 1.0) for t in p.prompt) for p in penalties], device) > 0
        seen |= prompt
        r = torch.tensor(rep, device=device, dtype=sub.dtype).unsqueeze(1)
        sub = torch.where(seen, torch.where(sub > 0, sub / r, sub * r), sub)

    freq = torch.tensor([p.frequency for p in penalties], device=device, dtype=sub.dtype).unsqueeze(1)
    pres = torch.tensor([p.presence for p in penalties], device=device, dtype=sub.dtype).unsqueeze(1)
    if bool(freq.any()) or bool(pres.any()):
        sub = sub - counts * freq - (counts > 0).to(sub.dtype) * pres

    biased = [(i, t, b) for i, p in enumerate(penalties) for t, b in p.bias if 0 <= t < vocab]
    if biased:
        r_idx = torch.tensor([i for i, _, _ in biased], device=device)
        t_idx = torch.tensor([t for _, t, _ in biased], device=device)
        values = torch.tensor([b for _, _, b in biased], device=device, dtype=sub.dtype)
        sub.index_put_((r_idx, t_idx), values, accumulate=True)
    logits[idx] = sub


def _dense(n: int, vocab: int, entries: Sequence[object], device: torch.device) -> torch.Tensor:
    """``[n, vocab]`` float32 from per-row ``(token, value)`` pairs, in one scatter."""
    out = torch.zeros((n, vocab), dtype=torch.float32, device=device)
    rows: list[int] = []
    tokens: list[int] = []
    values: list[float] = []
    for i, items in enumerate(entries):
        for t, v in items:  # type: ignore[attr-defined]
            if 0 <= t < vocab:
                rows.append(i)
                tokens.append(int(t))
                values.append(float(v))
    if rows:
        out.index_put_(
            (torch.tensor(rows, device=device), torch.tensor(tokens, device=device)),
            torch.tensor(values, device=device),
            accumulate=True,
        )
    return out
