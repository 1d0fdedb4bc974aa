"""The body of ``POST /v1/responses``, as OpenAI defines it (``openai.types.responses``).

Shapes are checked here; what hfd does not do is refused by ``check_supported`` with a 400
naming the field, never ignored: built-in tools (web search, file search, ...), background
mode, reasoning settings, ``include``, prompt templates, conversations, automatic truncation.
Fields that change nothing here (``service_tier``, ``prompt_cache_key``, ``safety_identifier``,
``stream_options``) are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hfd.client.errors import InvalidRequest
from hfd.daemon.schema import KeepAlive


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class ContentPart(_Body):
    type: str
    text: str | None = None
    image_url: str | None = None  # input_image: a data: URL (vision chat models)
    detail: Literal["auto", "low", "high"] | None = None


class InputItem(_Body):
    """One item of ``input``: a message (``type`` may be left out), a ``function_call`` (an
    earlier call of the model's) or a ``function_call_output`` (its result). The fields of each
    type are checked when it is translated (``translate.chat_messages``)."""

    type: str = "message"
    role: str | None = None
    content: str | list[ContentPart] | None = None
    id: str | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None


class FunctionTool(_Body):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedChoice(_Body):
    type: str
    name: str | None = None


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: Annotated[dict[str, Any] | None, Field(alias="schema")] = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(_Body):
    model: Annotated[str, Field(min_length=1)]
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    # Not in OpenAI's API; as on the chat route.
    keep_alive: KeepAlive = None
    # Refused unless left at what changes nothing (see check_supported).
    background: bool | None = None
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: str | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    prompt: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None

    def check_supported(self) -> None:
        if self.background:
            raise InvalidRequest("background responses are not supported", param="background")
        if self.include:
            raise InvalidRequest(f"include {self.include[0]!r} is not supported", param="include")
        if self.reasoning and any(v is not None for v in self.reasoning.values()):
            raise InvalidRequest("reasoning settings are not supported by these models", param="reasoning")
        if self.truncation not in (None, "disabled"):
            raise InvalidRequest(
                "truncation 'auto' is not supported; a conversation longer than the context is refused",
                param="truncation",
            )
        if self.top_logprobs:
            raise InvalidRequest("top_logprobs is not supported on /v1/responses", param="top_logprobs")
        if self.max_tool_calls is not None:
            raise InvalidRequest("max_tool_calls is not supported", param="max_tool_calls")
        if self.prompt is not None:
            raise InvalidRequest("prompt templates are not supported; send input", param="prompt")
        if self.conversation is not None:
            raise InvalidRequest(
                "conversations are not supported; chain responses with previous_response_id",
                param="conversation",
            )
        if self.text is not None and self.text.verbosity not in (None, "medium"):
            raise InvalidRequest("text.verbosity is not supported", param="text.verbosity")
        for i, tool in enumerate(self.tools or ()):
            if tool.type != "function":
                raise InvalidRequest(
                    f"tools of type {tool.type!r} are not supported; only function tools",
                    param=f"tools.{i}.type",
                )
            if not tool.name:
                raise InvalidRequest("a function tool needs a name", param=f"tools.{i}.name")
        choice = self.tool_choice
        if isinstance(choice, NamedChoice):
            if choice.type != "function":
                raise InvalidRequest(
                    f"tool_choice of type {choice.type!r} is not supported; only function tools",
                    param="tool_choice.type",
                )
            if not choice.name:
                raise InvalidRequest("tool_choice names no function", param="tool_choice.name")
