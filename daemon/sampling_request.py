"""The sampling parameters of a chat or completions request beyond plain sampling, checked as
OpenAI checks them (400 naming the field), and turned into ``SamplingParams`` fields.

- ``logprobs`` / ``top_logprobs`` (chat: a bool and 0..20) and ``logprobs`` (completions: an int
  0..5); ``top_logprobs`` without ``logprobs: true`` is refused, as OpenAI does;
- ``echo`` (completions): the prompt in front of the text, with ``logprobs`` its tokens' logprobs;
- ``n`` (1..``MAX_CHOICES``) and ``best_of`` (completions, ``n <= best_of <= MAX_CHOICES``, not
  streamed): ``best_of`` sequences per prompt, the ``n`` with the highest cumulative logprob kept;
- ``presence_penalty`` / ``frequency_penalty`` (-2..2), ``repetition_penalty`` (> 0, vLLM's),
  ``logit_bias`` (token id -> -100..100, at most 300 entries).

Whether the model's engine honours them is checked once the model is loaded
(``hfd.backends.capabilities``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfd.backends.logprobs import MAX_COMPLETION_LOGPROBS, MAX_TOP_LOGPROBS
from hfd.client.errors import InvalidRequest

if TYPE_CHECKING:
    from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest, _Sampling

# Most sequences one request may ask for (n, best_of, and prompts x n): each is a batch row.
MAX_CHOICES = 16
MAX_LOGIT_BIAS = 300  # OpenAI's bound


def _is_chat(req: _Sampling) -> bool:
    return hasattr(req, "messages")


def check_sampling(req: _Sampling) -> None:
    chat = _is_chat(req)
    if not 1 <= req.n <= MAX_CHOICES:
        raise InvalidRequest(f"n must be between 1 and {MAX_CHOICES}", param="n")
    lp = req.logprobs
    if chat:
        if lp is not None and not isinstance(lp, bool):
            raise InvalidRequest("logprobs must be a boolean for chat completions", param="logprobs")
        if req.top_logprobs is not None:
            if not lp:
                raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
            if not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
                raise InvalidRequest(
                    f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs"
                )
    else:
        if isinstance(lp, bool) or (lp is not None and not 0 <= lp <= MAX_COMPLETION_LOGPROBS):
            raise InvalidRequest(
                f"logprobs must be an integer between 0 and {MAX_COMPLETION_LOGPROBS}", param="logprobs"
            )
        if req.top_logprobs is not None:
            raise InvalidRequest(
                "top_logprobs is for chat completions; use logprobs here", param="top_logprobs"
            )
    if req.best_of is not None:
        if chat:
            raise InvalidRequest("best_of is for completions", param="best_of")
        if not req.n <= req.best_of <= MAX_CHOICES:
            raise InvalidRequest(f"best_of must be between n and {MAX_CHOICES}", param="best_of")
        if req.stream and req.best_of > 1:
            raise InvalidRequest("best_of cannot be used with stream", param="best_of")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not None and not -2.0 <= value <= 2.0:
            raise InvalidRequest(f"{name} must be between -2 and 2", param=name)
    if req.repetition_penalty is not None and not 0.0 < req.repetition_penalty <= 10.0:
        raise InvalidRequest("repetition_penalty must be in (0, 10]", param="repetition_penalty")
    logit_bias(req)
    if not chat:
        c: CompletionRequest = req  # type: ignore[assignment]
        if c.suffix and any(not isinstance(v, str) for v in prompt_values(c)):
            raise InvalidRequest("suffix needs text prompts, not token ids", param="suffix")
        if c.max_tokens == 0 and not c.echo:
            raise InvalidRequest("max_tokens must be at least 1 (0 only with echo)", param="max_tokens")
        if len(prompt_values(c)) * max(c.n, c.best_of or 1) > MAX_CHOICES:
            raise InvalidRequest(
                f"prompts x {'best_of' if c.best_of else 'n'} must be at most {MAX_CHOICES} sequences",
                param="prompt",
            )


def logit_bias(req: _Sampling) -> tuple[tuple[int, float], ...]:
    if not req.logit_bias:
        return ()
    if len(req.logit_bias) > MAX_LOGIT_BIAS:
        raise InvalidRequest(f"logit_bias may have at most {MAX_LOGIT_BIAS} entries", param="logit_bias")
    out = []
    for key, value in req.logit_bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(
                f"logit_bias keys must be token ids, not {key!r}", param="logit_bias"
            ) from None
        if token < 0:
            raise InvalidRequest(f"logit_bias token id {token} is negative", param="logit_bias")
        if not -100.0 <= float(value) <= 100.0:
            raise InvalidRequest("logit_bias values must be between -100 and 100", param="logit_bias")
        out.append((token, float(value)))
    return tuple(sorted(out))


def prompt_values(req: CompletionRequest) -> list[str | list[int]]:
    p: Any = req.prompt
    if isinstance(p, str):
        return [p]
    if not p:
        raise InvalidRequest("the prompt is empty", param="prompt")
    if all(isinstance(x, str) for x in p):
        return list(p)
    if all(type(x) is int for x in p):
        return [[int(x) for x in p]]
    if all(isinstance(x, list) and x and all(type(t) is int for t in x) for x in p):
        return [[int(t) for t in x] for x in p]
    raise InvalidRequest(
        "prompt must be a string, a list of strings, a list of token ids or a list of such lists",
        param="prompt",
    )


def logprobs_asked(req: _Sampling) -> int | None:
    """How many top logprobs per generated token (None: no logprobs)."""
    if _is_chat(req):
        return (req.top_logprobs or 0) if req.logprobs else None
    lp = req.logprobs
    return None if lp is None or isinstance(lp, bool) else int(lp)


def engine_fields(req: _Sampling) -> dict[str, Any]:
    """The ``SamplingParams`` fields for the request's extensions."""
    lp = logprobs_asked(req)
    fields: dict[str, Any] = {
        "logprobs": lp,
        "presence_penalty": float(req.presence_penalty or 0.0),
        "frequency_penalty": float(req.frequency_penalty or 0.0),
        "repetition_penalty": float(req.repetition_penalty if req.repetition_penalty is not None else 1.0),
        "logit_bias": logit_bias(req),
    }
    if not _is_chat(req) and getattr(req, "echo", False) and lp is not None:
        fields["prompt_logprobs"] = lp
    if not _is_chat(req) and (getattr(req, "best_of", None) or 1) > req.n and lp is None:
        fields["logprobs"] = 0  # best_of ranks by cumulative logprob
    return fields


def wants_choices(req: ChatCompletionRequest | CompletionRequest) -> bool:
    """Whether the request needs the several-choices path (``hfd.daemon.choices``)."""
    if req.n != 1 or logprobs_asked(req) is not None:
        return True
    if _is_chat(req):
        return False
    c: CompletionRequest = req  # type: ignore[assignment]
    return bool(c.echo) or bool(c.suffix) or (c.best_of or 1) > 1 or len(prompt_values(c)) != 1
