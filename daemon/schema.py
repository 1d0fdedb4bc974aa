"""Request types shared by both doors (one definition: HTTP JSON bodies and IPC msgpack
bodies use the same OpenAI field names and are validated here).

Parsing raises ``ValidationFailed`` (422) for wrong types/shapes and ``InvalidRequest`` (400)
for well-typed values the daemon does not support. Unknown fields are ignored, as OpenAI
clients send fields a server may not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hfd.client.errors import InvalidRequest, ValidationFailed

T = TypeVar("T", bound=BaseModel)

# keep_alive: seconds as a number, or a duration string like "5m", "30s", "1h", "-1".
KeepAlive = float | str | None


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


class StreamOptions(_Base):
    include_usage: bool = False


class ContentPart(_Base):
    type: str
    text: str | None = None


class ChatMessage(_Base):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

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
    seed: int | None = None
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

    def check_supported(self) -> None:
        if self.n != 1:
            raise InvalidRequest("only n=1 is supported", param="n")
        if self.logprobs:
            raise InvalidRequest("logprobs are not supported", param="logprobs")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise InvalidRequest(f"{name} is not supported", param=name)


class ChatCompletionRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int]
    echo: bool = False
    suffix: str | None = None

    def token_limit(self) -> int | None:
        return self.max_tokens

    def prompt_value(self) -> str | list[int]:
        """One prompt: a string or a list of token ids. Batches of prompts are refused."""
        p = self.prompt
        if isinstance(p, list):
            if all(isinstance(x, int) for x in p) and p:
                return [int(x) for x in p]
            if len(p) == 1 and isinstance(p[0], str):
                return p[0]
            raise InvalidRequest(
                "send one prompt per request (a string or a list of token ids)", param="prompt"
            )
        if self.echo:
            raise InvalidRequest("echo is not supported", param="echo")
        if self.suffix:
            raise InvalidRequest("suffix is not supported", param="suffix")
        return p


class EmbeddingRequest(_Base):
    model: Annotated[str, Field(min_length=1)]
    input: str | list[str] | list[int] | list[list[int]]
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
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise ValidationFailed(
            f"{loc or 'body'}: {first.get('msg', 'invalid value')}",
            param=loc or None,
            details={"errors": [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()[:10]]},
        ) from exc


def parse_keep_alive(value: KeepAlive) -> float | None:
    """Seconds from a number or a duration string ("30s", "5m", "1h", "-1", "0")."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        for suffix in ("ms", "s", "m", "h"):
            if text.endswith(suffix):
                return float(text[: -len(suffix)]) * units[suffix]
        return float(text)
    except ValueError:
        raise ValidationFailed(
            f"keep_alive: cannot read a duration from {value!r}", param="keep_alive"
        ) from None
