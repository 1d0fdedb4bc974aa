"""Choosing the next token of every row of a batch, each row with its own sampling parameters.

Work is vectorised over rows; the only per-row Python is drawing one uniform number from the
row's own ``torch.Generator``. That generator is what makes a seeded request reproducible
whatever else shares its batch: a row's draw depends on its seed and its own logits only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RowSampling:
    """What the sampler needs to know about one row for one step."""

    temperature: float
    top_p: float
    generator: torch.Generator | None  # None for greedy rows
    mask_eos: bool  # min_tokens not reached yet: eos may not be chosen

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def sample(logits: torch.Tensor, rows: Sequence[RowSampling], eos_ids: torch.Tensor | None) -> list[int]:
    """The next token per row. ``logits`` is ``[rows, vocab]`` (any float dtype, any device)."""
    logits = logits.float()
    if eos_ids is not None and eos_ids.numel():
        masked = [i for i, r in enumerate(rows) if r.mask_eos]
        if masked:
            idx = torch.tensor(masked, device=logits.device)
            logits[idx.unsqueeze(1), eos_ids.unsqueeze(0)] = float("-inf")

    chosen = logits.argmax(dim=-1)
    sampled = [i for i, r in enumerate(rows) if not r.greedy]
    if sampled:
        idx = torch.tensor(sampled, device=logits.device)
        params = [rows[i] for i in sampled]
        chosen[idx] = _sample_rows(logits.index_select(0, idx), params)
    return [int(t) for t in chosen.tolist()]


def _sample_rows(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    device = logits.device
    temperature = torch.tensor([r.temperature for r in rows], device=device, dtype=logits.dtype)
    probs = torch.softmax(logits / temperature.unsqueeze(1), dim=-1)

    order: torch.Tensor | None = None
    if any(r.top_p < 1.0 for r in rows):
        top_p = torch.tensor([r.top_p for r in rows], device=device, dtype=probs.dtype)
        probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p; the most likely token always stays.
        mass_before = probs.cumsum(dim=-1) - probs
        probs = probs.masked_fill(mass_before >= top_p.unsqueeze(1), 0.0)

    cdf = probs.cumsum(dim=-1)
    # One uniform per row from the row's own generator (on the CPU: generators are per device,
    # and this keeps a seed's stream identical on every device).
    draws = torch.stack([torch.rand((), generator=r.generator) for r in rows]).to(
        device=device, dtype=cdf.dtype
    )
    targets = draws * cdf[:, -1]
    # right=True: the first index whose cdf exceeds the draw, which always has non-zero mass.
    picked = torch.searchsorted(cdf, targets.unsqueeze(1), right=True).clamp_(max=cdf.shape[1] - 1)
    if order is not None:
        picked = order.gather(1, picked)
    return picked.squeeze(1)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator for one sequence: seeded when asked, from fresh entropy otherwise."""
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return gen
