"""What a generation engine can honour beyond plain sampling, so a request that asks for more
is refused with a clear error naming the engine instead of being served without it.

An engine declares ``capabilities: frozenset[str]`` (names below) on its generation model; an
engine that declares nothing honours none of them. An engine whose support depends on the other
settings may also have ``refuses(params) -> (what, param) | None``. ``n``, ``best_of``, ``echo`` of the prompt
text, stop strings and lists of prompts are done by the daemon, on every engine.
"""

from __future__ import annotations

from hfd.backends.base import SamplingParams
from hfd.client.errors import InvalidRequest

LOGPROBS = "logprobs"  # generated tokens' logprobs
TOP_LOGPROBS = "top_logprobs"  # and the most likely tokens' at each position (also the prompt's)
PROMPT_LOGPROBS = "prompt_logprobs"  # the prompt tokens' logprobs (completions' echo + logprobs)
PRESENCE_PENALTY = "presence_penalty"
FREQUENCY_PENALTY = "frequency_penalty"
REPETITION_PENALTY = "repetition_penalty"
LOGIT_BIAS = "logit_bias"

ALL: frozenset[str] = frozenset(
    {
        LOGPROBS,
        TOP_LOGPROBS,
        PROMPT_LOGPROBS,
        PRESENCE_PENALTY,
        FREQUENCY_PENALTY,
        REPETITION_PENALTY,
        LOGIT_BIAS,
    }
)


def capabilities(model: object) -> frozenset[str]:
    caps: object = getattr(model, "capabilities", frozenset())
    if isinstance(caps, frozenset):
        return frozenset(str(c) for c in caps)
    return frozenset(str(c) for c in caps) if isinstance(caps, (set, list, tuple)) else frozenset()


def asked(params: SamplingParams) -> list[tuple[str, str]]:
    """The features ``params`` uses, each with the request parameter that asked for it."""
    out: list[tuple[str, str]] = []
    if params.logprobs is not None:
        out.append((LOGPROBS, "logprobs"))
    if params.prompt_logprobs is not None:
        out.append((PROMPT_LOGPROBS, "echo"))
    if (params.logprobs or 0) > 0 or (params.prompt_logprobs or 0) > 0:
        out.append((TOP_LOGPROBS, "top_logprobs"))
    if params.presence_penalty:
        out.append((PRESENCE_PENALTY, "presence_penalty"))
    if params.frequency_penalty:
        out.append((FREQUENCY_PENALTY, "frequency_penalty"))
    if params.repetition_penalty != 1.0:
        out.append((REPETITION_PENALTY, "repetition_penalty"))
    if params.logit_bias:
        out.append((LOGIT_BIAS, "logit_bias"))
    return out


def check(model: object, params: SamplingParams, *, model_name: str = "this model") -> None:
    """Refuse, before the sequence is queued, what the model's engine cannot honour, and a
    ``logit_bias`` token outside the model's vocabulary (when the engine reports its size)."""
    caps = capabilities(model)
    engine = str(getattr(model, "name", "?"))
    for feature, param in asked(params):
        if feature not in caps:
            what = "echo with logprobs (prompt logprobs)" if feature == PROMPT_LOGPROBS else feature
            pin = ' (engine = "torch" in its [[models]] entry)'
            raise _unsupported(what, engine, model_name, pin, param=param, feature=feature)
    refuses = getattr(model, "refuses", None)
    refused = refuses(params) if callable(refuses) else None
    if refused is not None:
        what, param = refused
        raise _unsupported(what, engine, model_name, "", param=param, feature=param)
    vocab = getattr(model, "vocab_size", None)
    if params.logit_bias and isinstance(vocab, int) and vocab > 0:
        bad = [t for t, _ in params.logit_bias if not 0 <= t < vocab]
        if bad:
            raise InvalidRequest(
                f"logit_bias token id {bad[0]} is outside this model's vocabulary [0, {vocab})",
                param="logit_bias",
            )


def _unsupported(
    what: str, engine: str, model_name: str, pin: str, *, param: str, feature: str
) -> InvalidRequest:
    return InvalidRequest(
        f"{what} is not supported by the {engine} engine for {model_name}; pin engine torch "
        f"for this model{pin} to use it",
        param=param,
        details={"engine": engine, "feature": feature},
    )
