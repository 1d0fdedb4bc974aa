"""Log-probabilities as engines report them: token ids and floats, no text (the scheduler turns
ids into text, ``hfd.daemon.scheduler.detok_logprobs``).

Convention (OpenAI's and vLLM's default): a logprob is of the model's own next-token
distribution, ``log_softmax`` of the raw logits, before temperature, top-p, penalties,
``logit_bias`` and constrained-decoding masks. So a greedy token's logprob is what
transformers' ``model(ids).logits.log_softmax(-1)`` gives for it, whatever the sampling settings.
"""

from __future__ import annotations

from dataclasses import dataclass

# OpenAI's bounds: chat ``top_logprobs`` <= 20, completions ``logprobs`` <= 5.
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5


@dataclass(frozen=True)
class TokenLogprob:
    """One position: the token there, its logprob, and the ``k`` most likely tokens (most likely
    first; the chosen token is among them only when it is one of the ``k``)."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def ov_logprobs(tokens: list[int], lps: list[float] | None) -> list[TokenLogprob] | None:
    """OpenVINO GenAI's per-token logprobs (chosen tokens only) as ``TokenLogprob`` s."""
    if lps is None or len(lps) != len(tokens):
        return None
    return [TokenLogprob(int(t), float(lp)) for t, lp in zip(tokens, lps, strict=True)]


def ov_prompt_logprobs(prompt: list[int] | None, lps: list[float] | None) -> list[TokenLogprob | None] | None:
    """GenAI's echo logprobs of a prompt (its first entry is a placeholder: the first token has none)."""
    if prompt is None or lps is None or len(lps) != len(prompt):
        return None
    return [None, *(TokenLogprob(int(t), float(lp)) for t, lp in zip(prompt[1:], lps[1:], strict=True))]
