"""Request types shared by both doors (one definition: HTTP JSON bodies and IPC msgpack
bodies use the same OpenAI field names and are validated here).

Parsing raises ``ValidationFailed`` (400 ``validation_error``, as OpenAI answers) for wrong
types/shapes and values out of range, and ``InvalidRequest`` (400) for well-typed values the
daemon does not support. Unknown fields are ignored, as OpenAI clients send fields a server may
not know.

Before any field is read, every value of a body is checked (``check_values``): numbers must be
finite (JSON and msgpack can carry NaN and infinity, and a NaN keep-alive never expires) and
text must be encodable as UTF-8 (JSON can carry lone surrogates such as ``"\ud800"``, which
tokenizers refuse with a TypeError). Both answer 400 naming the field.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from hfd.client.errors import InvalidRequest, ValidationFailed
from hfd.daemon.tools.types import Tool, ToolCallItem, ToolChoice
from hfd.daemon.validation import validation_failed

T = TypeVar("T", bound=BaseModel)

# keep_alive: seconds as a number, or a duration string like "5m", "30s", "1h", "-1".
KeepAlive = float | str | None

# Seeds reach the engines as remainders modulo this (see ``_Sampling.engine_seed``).
SEED_RANGE = 2**63


class _Base(BaseModel):
    # allow_inf_nan=False backs up check_values for bodies built in-process.
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False, allow_inf_nan=False)


class StreamOptions(_Base):
    include_usage: bool = False


class ImageURL(_Base):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(_Base):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None  # type "image_url": vision chat (hfd.daemon.vision_chat)


class ChatMessage(_Base):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallItem] | None = None  # an assistant's calls (tool history)
    tool_call_id: str | None = None  # a tool message: the call it answers

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.type != "text" or part.text is None:
                raise InvalidRequest(f"content part of type {part.type!r} is not supported; send text parts")
            parts.append(part.text)
        return "".join(parts)


class _Sampling(_Base):
    model: Annotated[str, Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    seed: StrictInt | None = None  # any integer, as in OpenAI (not a string, bool or float)
    stop: str | list[str] | None = None
    n: Annotated[int, Field(ge=1)] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Not in the OpenAI API; vLLM and others accept them, and benchmarks need fixed lengths.
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0
    keep_alive: KeepAlive = None
    cache: bool = True  # False bypasses the response cache
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | int | None = None
    # Sampling extensions (hfd.daemon.sampling_request checks them, 400 naming the field).
    top_logprobs: int | None = None
    logit_bias: dict[str, float] | None = None
    repetition_penalty: float | None = None  # vLLM's and HF's, not OpenAI's
    best_of: int | None = None
    # Structured output (hfd.daemon.structured): checked there, 400 with the field's name.
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None  # vLLM's extensions
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return v

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def engine_seed(self) -> int | None:
        """The seed as every engine can take it. OpenAI accepts any integer; engines take
        unsigned 64-bit (OpenVINO) or signed 64-bit (torch) values and fail on others, so
        any integer maps to [0, 2**63) by its remainder: deterministic, and the identity
        for the seeds clients usually send."""
        return None if self.seed is None else self.seed % SEED_RANGE

    def check_supported(self) -> None:
        from hfd.daemon.sampling_request import check_sampling

        check_sampling(self)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    # Tool calling (hfd.daemon.tools): checked by tools.validate, 400 with the field's name.
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None  # None: true, as OpenAI

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    suffix: str | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = None  # 0: echo only (loglikelihood scoring)

    def token_limit(self) -> int | None:
        return self.max_tokens

    def prompt_values(self) -> list[str | list[int]]:
        """The prompts, in order: a string, a list of strings, one token-id list or a list of them."""
        from hfd.daemon.sampling_request import prompt_values

        return prompt_values(self)

    def prompt_value(self) -> str | list[int]:
        """One prompt: a string or a list of token ids (``prompt_values`` has them all)."""
        values = self.prompt_values()
        if len(values) != 1:
            raise InvalidRequest("send one prompt here", param="prompt")
        return values[0]


class EmbeddingRequest(_Base):
    model: Annotated[str, Field(min_length=1)]
    # dict items: images and texts for image-text models (hfd.daemon.images).
    input: str | list[str] | list[int] | list[list[int]] | list[str | dict[str, Any]] | dict[str, Any]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    keep_alive: KeepAlive = None
    cache: bool = True
    user: str | None = None

    def texts(self) -> list[str]:
        inp = self.input
        if isinstance(inp, str):
            texts = [inp]
        elif all(isinstance(x, str) for x in inp):
            texts = [str(x) for x in inp]
        else:
            raise InvalidRequest(
                "token-id input is not supported for embeddings; send strings", param="input"
            )
        if not texts:
            raise InvalidRequest("input must not be empty", param="input")
        if any(t == "" for t in texts):
            raise InvalidRequest("input strings must not be empty", param="input")
        return texts


class ModelRequest(_Base):
    """Body of load/unload/pull operations."""

    model: Annotated[str, Field(min_length=1)]
    keep_alive: KeepAlive = None


def parse(model: type[T], data: Any) -> T:
    """Validate a decoded body into a request type, mapping pydantic's errors to ours."""
    if not isinstance(data, dict):
        raise ValidationFailed("request body must be an object")
    check_values(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc) from exc  # 400 naming the field, as OpenAI answers


def check_values(data: Any) -> None:
    """Refuse a body holding a non-finite number or text that is not encodable UTF-8, with the
    field's path as ``param``. Iterative, so a deeply nested body cannot exhaust the stack."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and not _utf8(key):
                    raise InvalidRequest(_NOT_UTF8, param=_param(path) or "body")
                stack.append((item, (*path, key)))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                # Token-id lists are long: skip their ints without a stack entry each.
                if type(item) is not int:
                    stack.append((item, (*path, index)))
        elif isinstance(value, str):
            if not _utf8(value):
                raise InvalidRequest(_NOT_UTF8, param=_param(path))
        elif isinstance(value, float) and not math.isfinite(value):
            raise InvalidRequest(f"{_param(path)}: numbers must be finite, not {value!r}", param=_param(path))


_NOT_UTF8 = "text must be valid Unicode (encodable as UTF-8); it has a lone surrogate"


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _param(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path)


def utf8_length(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (after ``check_values``, every text encodes)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def parse_keep_alive(value: KeepAlive) -> float | None:
    """Seconds from a number or a duration string ("30s", "5m", "1h", "-1", "0"); refuses
    values that are not finite ("1e999s", "nan"): a model kept that long never expires."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        try:
            seconds = float(value)
        except OverflowError:  # an integer too large for a float
            seconds = math.inf
    else:
        text = value.strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        try:
            for suffix in ("ms", "s", "m", "h"):
                if text.endswith(suffix):
                    seconds = float(text[: -len(suffix)]) * units[suffix]
                    break
            else:
                seconds = float(text)
        except ValueError:
            raise ValidationFailed(
                f"keep_alive: cannot read a duration from {value!r}", param="keep_alive"
            ) from None
    if not math.isfinite(seconds):
        raise InvalidRequest(
            f"keep_alive must be a finite duration, not {value!r} (negative keeps the model loaded)",
            param="keep_alive",
        )
    return seconds
