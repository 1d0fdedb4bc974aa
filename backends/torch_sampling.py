"""Choosing the next token of every row of a batch, each row with its own sampling parameters.

Work is vectorised over rows; the only per-row Python is drawing one uniform number from the
row's own ``torch.Generator``. That generator is what makes a seeded request reproducible
whatever else shares its batch: a row's draw depends on its seed and its own logits only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from hfd.backends import torch_penalties
from hfd.backends.constraints import accept_tokens, fill_masks
from hfd.backends.logprobs import TokenLogprob

if TYPE_CHECKING:
    from hfd.backends.constraints import TokenMatcher
    from hfd.backends.torch_penalties import Penalties


@dataclass(frozen=True)
class RowSampling:
    """What the sampler needs to know about one row for one step."""

    temperature: float
    top_p: float
    generator: torch.Generator | None  # None for greedy rows
    mask_eos: bool  # min_tokens not reached yet: eos may not be chosen
    matcher: TokenMatcher | None = None  # constrained decoding: the sequence's grammar position
    logprobs: int | None = None  # report the chosen token's logprob and this many top ones
    penalties: Penalties | None = None  # presence/frequency/repetition penalties, logit_bias

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def sample(logits: torch.Tensor, rows: Sequence[RowSampling], eos_ids: torch.Tensor | None) -> list[int]:
    """The next token per row. ``logits`` is ``[rows, vocab]`` (any float dtype, any device); it
    may be modified in place."""
    return sample_with_logprobs(logits, rows, eos_ids)[0]


def sample_with_logprobs(
    logits: torch.Tensor, rows: Sequence[RowSampling], eos_ids: torch.Tensor | None
) -> tuple[list[int], list[TokenLogprob | None]]:
    """``sample``, and for the rows that ask (``RowSampling.logprobs``) the chosen token's
    logprob and the top ones, of the raw distribution (``backends.logprobs``): computed before
    any penalty, bias, mask or temperature touches the logits."""
    logits = logits.float()
    wanted = [i for i, r in enumerate(rows) if r.logprobs is not None]
    raw = None
    if wanted:
        raw = torch.log_softmax(logits.index_select(0, torch.tensor(wanted, device=logits.device)), dim=-1)
    penalised = [i for i, r in enumerate(rows) if r.penalties is not None]
    if penalised:
        torch_penalties.apply(logits, penalised, [rows[i].penalties for i in penalised])  # type: ignore[misc]
    if eos_ids is not None and eos_ids.numel():
        masked = [i for i, r in enumerate(rows) if r.mask_eos]
        if masked:
            idx = torch.tensor(masked, device=logits.device)
            logits[idx.unsqueeze(1), eos_ids.unsqueeze(0)] = float("-inf")
    constrained = [i for i, r in enumerate(rows) if r.matcher is not None]
    matchers = [m for m in (rows[i].matcher for i in constrained) if m is not None]
    if matchers:
        _mask_constrained(logits, matchers, constrained)
    tokens = _choose(logits, rows)
    if matchers:
        accept_tokens(matchers, [tokens[i] for i in constrained])
    for i in penalised:
        penalties = rows[i].penalties
        assert penalties is not None
        penalties.push(tokens[i])
    logprobs: list[TokenLogprob | None] = [None] * len(rows)
    if raw is not None:
        for i, entry in zip(
            wanted,
            _logprobs(raw, [tokens[i] for i in wanted], [rows[i].logprobs or 0 for i in wanted]),
            strict=True,
        ):
            logprobs[i] = entry
    return tokens, logprobs


def _logprobs(raw: torch.Tensor, tokens: list[int], ks: list[int]) -> list[TokenLogprob]:
    """Per row of ``raw`` (log-softmax), the chosen token's logprob and its ``k`` top tokens."""
    chosen = raw.gather(1, torch.tensor(tokens, device=raw.device).unsqueeze(1)).squeeze(1).tolist()
    k = min(max(ks), raw.shape[-1])
    top_v: list[list[float]] = []
    top_i: list[list[int]] = []
    if k:
        values, index = raw.topk(k, dim=-1)
        top_v, top_i = values.tolist(), index.tolist()
    out = []
    for r, (token, lp, kr) in enumerate(zip(tokens, chosen, ks, strict=True)):
        top = tuple(zip(top_i[r][:kr], top_v[r][:kr], strict=True)) if kr else ()
        out.append(TokenLogprob(int(token), float(lp), top))
    return out


def prompt_logprobs(logits: torch.Tensor, prompt: Sequence[int], k: int) -> list[TokenLogprob | None]:
    """Each prompt token's logprob given the tokens before it (the first has none): ``logits``
    is ``[len(prompt), vocab]``, the model's output at each prompt position."""
    if len(prompt) < 2:
        return [None] * len(prompt)
    raw = torch.log_softmax(logits[:-1].float(), dim=-1)
    return [None, *_logprobs(raw, [int(t) for t in prompt[1:]], [k] * (len(prompt) - 1))]


def _choose(logits: torch.Tensor, rows: Sequence[RowSampling]) -> list[int]:
    sampled = [i for i, r in enumerate(rows) if not r.greedy]
    if not sampled:
        return [int(t) for t in logits.argmax(dim=-1).tolist()]
    if len(sampled) == len(rows):
        return [int(t) for t in _sample_rows(logits, rows).tolist()]
    chosen = logits.argmax(dim=-1)
    idx = torch.tensor(sampled, device=logits.device)
    chosen[idx] = _sample_rows(logits.index_select(0, idx), [rows[i] for i in sampled])
    return [int(t) for t in chosen.tolist()]


def _mask_constrained(logits: torch.Tensor, matchers: list[TokenMatcher], rows: list[int]) -> None:
    """Set the logits of every token a constrained row's grammar forbids to -inf.

    The matchers write one int32 bitmask (bit ``i`` of word ``j``: token ``32 * j + i`` is allowed,
    xgrammar's layout; one batched call, ``constraints.fill_masks``). Read as little-endian bytes,
    byte ``b`` holds tokens ``8b .. 8b + 7``, so a 256 x 8 table of 0 / -inf turns the bitmask
    into an additive mask with one lookup, added to the constrained rows only; tokens past the
    bitmask's width (a logits row padded beyond the tokenizer's vocabulary) are forbidden.
    """
    vocab = logits.shape[-1]
    words = (vocab + 31) // 32
    bitmask = torch.zeros((len(rows), words), dtype=torch.int32)
    fill_masks(matchers, bitmask)
    octets = bitmask.view(torch.uint8).view(-1).to(device=logits.device, dtype=torch.int32)
    additive = _byte_table(logits.device).index_select(0, octets).view(len(rows), words * 32)[:, :vocab]
    if len(rows) == logits.shape[0]:
        logits.add_(additive)
    else:
        logits.index_add_(0, torch.tensor(rows, device=logits.device), additive)


_BYTE_TABLES: dict[torch.device, torch.Tensor] = {}


def _byte_table(device: torch.device) -> torch.Tensor:
    """``[256, 8]`` float: entry ``[b, k]`` is 0 where bit ``k`` of ``b`` is set, else -inf."""
    table = _BYTE_TABLES.get(device)
    if table is None:
        bits = (torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1
        table = _BYTE_TABLES[device] = torch.where(bits.bool(), 0.0, float("-inf")).to(device)
    return table


# A trained model's nucleus is usually a handful of tokens: rows whose top-k already holds
# top_p of the mass are served from the top-k; the others find it with a histogram (``_nucleus_threshold``).
_NUCLEUS_TOPK = 64
# The nucleus histogram: bins of 1/16 nat of log-probability, 64 nats deep.
_BINS_PER_NAT = 16
_BINS = 1024


def _sample_rows(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    device = logits.device
    temperature = torch.tensor([r.temperature for r in rows], device=device, dtype=logits.dtype)
    probs = torch.softmax(logits.div_(temperature.unsqueeze(1)), dim=-1)
    draws = _draws(rows, device, probs.dtype)
    nucleus = [i for i, r in enumerate(rows) if r.top_p < 1.0]
    if not nucleus:
        return _inverse_cdf(probs, draws)
    picked = torch.empty(len(rows), dtype=torch.long, device=device)
    if len(nucleus) < len(rows):
        whole = torch.tensor([i for i, r in enumerate(rows) if r.top_p >= 1.0], device=device)
        picked[whole] = _inverse_cdf(probs.index_select(0, whole), draws.index_select(0, whole))
    idx = torch.tensor(nucleus, device=device)
    top_p = torch.tensor([rows[i].top_p for i in nucleus], device=device, dtype=probs.dtype)
    picked[idx] = _sample_nucleus(probs.index_select(0, idx), top_p, draws.index_select(0, idx))
    return picked


def _draws(rows: Sequence[RowSampling], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # One uniform per row from the row's own generator (on the CPU: generators are per device,
    # and this keeps a seed's stream identical on every device).
    draws = torch.stack([torch.rand((), generator=r.generator) for r in rows])
    return draws.to(device=device, dtype=dtype)


def _inverse_cdf(weights: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Row-wise sampling from unnormalised non-negative weights with uniform draws in [0, 1)."""
    cdf = weights.cumsum(dim=-1)
    targets = (draws * cdf[:, -1]).unsqueeze(1)
    # right=True: the first index whose cdf exceeds the draw, which always has non-zero weight.
    return torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[1] - 1).squeeze(1)


def _sample_nucleus(probs: torch.Tensor, top_p: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """Top-p sampling without sorting the vocabulary.

    Both paths draw from the kept tokens in vocabulary order, so a row gets the same token
    whichever path serves it (the path depends only on the row's own probabilities).
    """
    rows, vocab = probs.shape
    picked = torch.empty(rows, dtype=torch.long, device=probs.device)
    fast = torch.zeros(rows, dtype=torch.bool, device=probs.device)
    if 0 < _NUCLEUS_TOPK < vocab:
        values, index = probs.topk(_NUCLEUS_TOPK, dim=-1)
        fast = values.sum(dim=-1) >= top_p
        if bool(fast.any()):
            f = fast.nonzero().squeeze(1)
            values, index, p = values[f], index[f], top_p[f]
            # The smallest prefix (by probability) reaching top_p; the most likely token stays.
            mass_before = values.cumsum(dim=-1) - values
            values = values.masked_fill(mass_before >= p.unsqueeze(1), 0.0)
            index, order = index.sort(dim=-1)
            values = values.gather(1, order)
            picked[f] = index.gather(1, _inverse_cdf(values, draws[f]).unsqueeze(1)).squeeze(1)
    if not bool(fast.all()):
        slow = (~fast).nonzero().squeeze(1)
        sub = probs.index_select(0, slow)
        kept = sub >= _nucleus_threshold(sub, top_p.index_select(0, slow)).unsqueeze(1)
        picked[slow] = _inverse_cdf(sub * kept, draws.index_select(0, slow))
    return picked


def _nucleus_threshold(probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per row, the smallest probability in the nucleus: the tokens with ``p >= t`` are it.

    Exact, without sorting the vocabulary: a mass histogram over log-probability bins finds the
    bin where the running mass reaches ``top_p``; only that bin's tokens are ranked (top-k).
    """
    rows = probs.shape[0]
    top = probs.max(dim=-1, keepdim=True).values
    # Bin 0 holds the most likely tokens; zero-probability tokens land in the last bin.
    depth = (top.log() - probs.log()).mul_(_BINS_PER_NAT).clamp_(max=_BINS - 1)
    bins = depth.long()
    mass = probs.new_zeros((rows, _BINS)).scatter_add_(1, bins, probs)
    cum = mass.cumsum(dim=1)
    edge = torch.searchsorted(cum, top_p.unsqueeze(1)).clamp_(max=_BINS - 1)  # first cum >= top_p
    before = torch.where(edge > 0, cum.gather(1, (edge - 1).clamp(min=0)), 0.0)
    in_edge = bins == edge
    count = int(in_edge.sum(dim=1).max())
    if count == 0:  # top_p above the (rounded) total mass: everything is in
        return torch.zeros_like(top_p)
    values = torch.where(in_edge, probs, -1.0).topk(count, dim=-1).values  # -1 pads short rows
    weights = values.clamp(min=0.0)
    mass_before = before + weights.cumsum(dim=1) - weights
    included = (mass_before < top_p.unsqueeze(1)) & (values >= 0.0)
    smallest = torch.where(included, values, float("inf")).min(dim=1).values
    return torch.where(torch.isinf(smallest), torch.zeros_like(smallest), smallest)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator for one sequence: seeded when asked, from fresh entropy otherwise."""
    gen = torch.Generator(device="cpu")
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return gen
