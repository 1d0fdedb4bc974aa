"""Speculative decoding on the OpenVINO engine: prompt lookup (no draft model).

GenAI's ``ContinuousBatchingPipeline`` proposes the next tokens by finding the last few
generated tokens earlier in the prompt (an n-gram of up to ``max_ngram_size`` tokens) and copying
the ``num_assistant_tokens`` that followed it there; one step of the model then checks them all
and keeps the longest run it agrees with. Greedy output is unchanged; a step may emit several
tokens. It wins where the answer repeats its prompt (editing code, quoting a given text) and
costs a little where nothing matches (every step then checks candidates that are thrown away).

A model turns it on with ``[[models]] options = { speculative = "prompt-lookup" }``; off by
default (see docs/engines.md for the measurements). ``lookup_tokens`` and ``lookup_ngram`` tune
the candidates per step and the longest n-gram looked up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from hfd.backends.base import LoadOptions
from hfd.client.errors import InvalidRequest

PROMPT_LOOKUP: Final = "prompt-lookup"
_OFF: Final = frozenset({"", "off", "none", "false", "no"})
# Bounds on the tuning options: GenAI checks a step's candidates in one forward pass each.
_MAX_TOKENS: Final = 64
_MAX_NGRAM: Final = 16


@dataclass(frozen=True)
class PromptLookup:
    num_assistant_tokens: int = 5
    max_ngram_size: int = 3

    def properties(self, properties: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's properties with prompt lookup on."""
        return {**properties, "prompt_lookup": True}

    def fields(self) -> dict[str, Any]:
        """The ``GenerationConfig`` fields every request of the model gets."""
        return {"num_assistant_tokens": self.num_assistant_tokens, "max_ngram_size": self.max_ngram_size}


def _bounded(opts: LoadOptions, name: str, default: int, top: int) -> int:
    value = opts.extra.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or not 1 <= number <= top:
        raise InvalidRequest(
            f"the model option {name} must be an integer in [1, {top}]", param=f"options.{name}"
        )
    return number


def speculative_plan(opts: LoadOptions) -> PromptLookup | None:
    """The model option ``speculative``: None (off, the default) or prompt lookup; anything
    else is refused, naming the option, rather than ignored."""
    raw = opts.extra.get("speculative", "")
    value = str(raw).strip().lower() if raw is not False else ""
    if value in _OFF:
        return None
    if value != PROMPT_LOOKUP:
        raise InvalidRequest(
            f"the model option speculative must be {PROMPT_LOOKUP!r} or 'off' on the openvino engine, not {raw!r}",
            param="options.speculative",
        )
    return PromptLookup(
        num_assistant_tokens=_bounded(opts, "lookup_tokens", PromptLookup.num_assistant_tokens, _MAX_TOKENS),
        max_ngram_size=_bounded(opts, "lookup_ngram", PromptLookup.max_ngram_size, _MAX_NGRAM),
    )


def warm_up_fields(properties: dict[str, Any]) -> dict[str, Any]:
    """What the engine's warm-up request adds to its config: a prompt-lookup pipeline refuses
    requests without the lookup fields."""
    return PromptLookup().fields() if properties.get("prompt_lookup") else {}
