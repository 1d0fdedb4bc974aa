"""The bodies of Ollama's requests (validated as hfd validates its own: ``schema.parse``),
and their translation into hfd's chat, completion and embedding requests."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hfd.client.errors import InvalidRequest
from hfd.daemon.ollama.options import response_format, sampling_fields
from hfd.daemon.schema import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, KeepAlive, parse


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class _Named(_Body):
    model: Annotated[str, Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        # Older Ollama clients send "name" where newer ones send "model".
        if isinstance(data, dict) and "model" not in data and "name" in data:
            return {**data, "model": data["name"]}
        return data


class Message(_Body):
    role: str
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class ChatBody(_Named):
    messages: list[Message] = []
    tools: list[dict[str, Any]] | None = None
    format: Any = None
    options: dict[str, Any] | None = None
    stream: bool = True  # Ollama streams unless told not to
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class GenerateBody(_Named):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None
    format: Any = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class EmbedBody(_Named):
    input: str | list[str]
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None
    dimensions: Annotated[int, Field(ge=1)] | None = None


class EmbeddingsBody(_Named):
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: KeepAlive = None


class ModelBody(_Named):
    verbose: bool = False


class CopyBody(_Body):
    source: Annotated[str, Field(min_length=1)]
    destination: Annotated[str, Field(min_length=1)]


def _no_images(images: list[str] | None, param: str) -> None:
    if images:
        raise InvalidRequest("images are not supported: no model served here is a vision model", param=param)


def _no_thinking(think: bool | str | None) -> None:
    if think not in (None, False, "", "false"):
        raise InvalidRequest("thinking is not supported by the models served here", param="think")


_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def keep_alive(value: KeepAlive) -> KeepAlive:
    """Ollama's ``keep_alive``: hfd's forms (seconds, ``"5m"``), and Go's compound durations
    (``"1h30m"``, ``"5m0s"``, ``"-1m"``) as seconds."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    parts = _GO_PART.findall(body)
    if len(parts) > 1 and "".join(n + u for n, u in parts) == body:
        return sign * sum(float(n) * _GO_UNITS[u] for n, u in parts)
    return value


def _common(body: ChatBody | GenerateBody, request: type[BaseModel], model: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": model, "stream": body.stream}
    if body.keep_alive is not None:
        out["keep_alive"] = keep_alive(body.keep_alive)
    out.update(sampling_fields(body.options, request))
    out.update(response_format(body.format, request))
    return out


def _tool_calls(calls: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as an object) in OpenAI's shape (arguments as JSON text),
    each with an id (Ollama's calls have none; its tool messages name the function instead)."""
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") or {}
        args = fn.get("arguments", {})
        out.append(
            {
                "id": call.get("id") or f"call_{at}_{i}",
                "type": "function",
                "function": {
                    "name": fn.get("name", ""),
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return out


def _with_images(text: str, images: list[str] | None) -> str | list[dict[str, Any]]:
    """A message's content; with ``images`` (base64), the images then the text as chat parts,
    for vision chat models (hfd.daemon.vision_chat decodes and bounds them)."""
    if not images:
        return text
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": b64}} for b64 in images]
    return [*parts, {"type": "text", "text": text}]


def chat_request(body: ChatBody, model: str) -> ChatCompletionRequest:
    _no_thinking(body.think)
    fields = ChatCompletionRequest.model_fields
    can_tool = "tools" in fields
    messages = []
    pending: list[tuple[str, str]] = []  # (id, function) of calls no tool message answered yet
    for i, m in enumerate(body.messages):
        entry: dict[str, Any] = {"role": m.role, "content": _with_images(m.content or "", m.images)}
        if m.tool_calls:
            if not can_tool:
                raise InvalidRequest("tool calls are not supported yet", param=f"messages.{i}.tool_calls")
            entry["tool_calls"] = _tool_calls(m.tool_calls, i)
            pending = [(c["id"], c["function"]["name"]) for c in entry["tool_calls"]]
        if m.role == "tool":
            # A tool result answers the earliest open call of its function (or the earliest
            # open call, when it names none): OpenAI's tool_call_id, which Ollama has not.
            match = next((p for p in pending if m.tool_name in (None, p[1])), pending[0] if pending else None)
            if match is not None:
                pending.remove(match)
                entry["tool_call_id"] = match[0]
            if m.tool_name:
                entry["name"] = m.tool_name
        messages.append(entry)
    out = _common(body, ChatCompletionRequest, model)
    out["messages"] = messages
    if body.tools:
        if not can_tool:
            raise InvalidRequest("tools are not supported yet", param="tools")
        out["tools"] = body.tools
    return parse(ChatCompletionRequest, out)


def _fill_template(template: str, system: str | None, prompt: str) -> str:
    """Ollama's Go template for the simple case: ``{{ .System }}`` and ``{{ .Prompt }}`` (and
    ``{{ if .System }}...{{ end }}`` blocks); anything else is refused."""
    import re

    text = template
    block = re.compile(r"\{\{-?\s*if\s+\.System\s*-?\}\}(.*?)\{\{-?\s*end\s*-?\}\}", re.S)
    text = block.sub(lambda m: m.group(1) if system else "", text)
    text = re.sub(r"\{\{-?\s*\.System\s*-?\}\}", lambda _: system or "", text)
    text = re.sub(r"\{\{-?\s*\.Prompt\s*-?\}\}", lambda _: prompt, text)
    text = re.sub(r"\{\{-?\s*\.Response\s*-?\}\}.*\Z", "", text, flags=re.S)
    if "{{" in text:
        raise InvalidRequest(
            "this template uses more than {{ .System }} and {{ .Prompt }}; send the prompt formatted "
            "with raw: true",
            param="template",
        )
    return text


def generate_request(body: GenerateBody, model: str) -> ChatCompletionRequest | CompletionRequest:
    """``raw`` (or a ``template``): the prompt as the model's input, a completion. Otherwise the
    model's chat template wraps ``system`` and ``prompt``, as Ollama applies its template."""
    _no_thinking(body.think)
    _no_images(body.images, "images")
    if body.context:
        raise InvalidRequest(
            "context is not supported; send the conversation to /api/chat instead", param="context"
        )
    if body.raw or body.template:
        prompt = _fill_template(body.template, body.system, body.prompt) if body.template else body.prompt
        out = _common(body, CompletionRequest, model)
        out["prompt"] = prompt
        if body.suffix:
            out["suffix"] = body.suffix
        return parse(CompletionRequest, out)
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    messages = [{"role": "system", "content": body.system}] if body.system else []
    messages.append({"role": "user", "content": body.prompt})
    out = _common(body, ChatCompletionRequest, model)
    out["messages"] = messages
    return parse(ChatCompletionRequest, out)


def embed_request(body: EmbedBody | EmbeddingsBody, model: str) -> EmbeddingRequest:
    if isinstance(body, EmbedBody):
        if not body.truncate:
            raise InvalidRequest(
                "truncate: false is not supported (inputs longer than the model's context are truncated)",
                param="truncate",
            )
        inputs: str | list[str] = body.input
        dimensions = body.dimensions
    else:
        inputs = body.prompt
        dimensions = None
    out: dict[str, Any] = {"model": model, "input": inputs}
    if dimensions is not None:
        out["dimensions"] = dimensions
    if body.keep_alive is not None:
        out["keep_alive"] = keep_alive(body.keep_alive)
    return parse(EmbeddingRequest, out)
