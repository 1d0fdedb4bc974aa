"""The checks every engine makes on a sequence it is asked to add: one wording, one error code.

The daemon checks requests before they reach an engine (``hfd.daemon.service``); engines check
again because they are also driven directly (benchmarks, tests) and because only they know their
vocabulary and context. Nothing here imports an engine library.
"""

from __future__ import annotations

from collections.abc import Sequence

from hfd.backends.base import SamplingParams
from hfd.client.errors import ContextLengthExceeded, InvalidRequest


def check_sequence(
    prompt_ids: Sequence[int], params: SamplingParams, context_length: int, vocab_size: int | None = None
) -> list[int]:
    """The prompt as a list of ints, after refusing an empty prompt, ids outside the vocabulary,
    a prompt that leaves no room to generate, and sampling parameters outside their range."""
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise InvalidRequest("the prompt is empty: at least one token is needed", param="prompt")
    if vocab_size and any(not 0 <= t < vocab_size for t in prompt):
        raise InvalidRequest(f"prompt token ids must be in [0, {vocab_size})", param="prompt")
    if len(prompt) >= context_length:
        raise ContextLengthExceeded(
            f"the prompt has {len(prompt)} tokens; this model's context is {context_length} "
            "tokens, prompt and completion together",
            param="prompt",
            details={"prompt_tokens": len(prompt), "context_length": context_length},
        )
    if params.max_tokens < 1:
        raise InvalidRequest("max_tokens must be at least 1", param="max_tokens")
    if not 0.0 < params.top_p <= 1.0:
        raise InvalidRequest("top_p must be in (0, 1]", param="top_p")
    return prompt
