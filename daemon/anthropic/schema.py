"""The body of ``POST /v1/messages`` and ``/v1/messages/count_tokens``, as Anthropic defines it.

Shapes are checked here; what hfd does not do is refused by ``check_supported`` with a 400
naming the field: extended thinking, server tools (web search, code execution, ...), MCP
servers, containers, and ``top_k`` while the chat path has no such sampling parameter.
``metadata``, ``service_tier`` and the ``anthropic-version`` / ``anthropic-beta`` headers change
nothing here and are accepted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hfd.client.errors import InvalidRequest
from hfd.daemon.schema import KeepAlive


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class Block(_Body):
    """A content block: ``text``, ``tool_use`` (id, name, input), ``tool_result`` (tool_use_id,
    content, is_error); other types are refused when translated."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    source: dict[str, Any] | None = None  # image: {"type": "base64", "media_type", "data"}


class Message(_Body):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class Tool(_Body):
    type: str | None = None  # None or "custom": a client tool; others are server tools
    name: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: Annotated[dict[str, Any], Field(alias="schema")]


class OutputConfig(_Body):
    format: OutputFormat | None = None
    effort: str | None = None


class _Conversation(_Body):
    model: Annotated[str, Field(min_length=1)]
    messages: Annotated[list[Message], Field(min_length=1)]
    system: str | list[Block] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    mcp_servers: list[Any] | None = None
    output_config: OutputConfig | None = None  # structured output: format json_schema
    keep_alive: KeepAlive = None

    def check_supported(self) -> None:
        if self.thinking and self.thinking.get("type") not in (None, "disabled"):
            raise InvalidRequest("extended thinking is not supported by these models", param="thinking")
        if self.output_config is not None and self.output_config.effort is not None:
            raise InvalidRequest("output_config.effort is not supported", param="output_config.effort")
        if self.mcp_servers:
            raise InvalidRequest("MCP servers are not supported", param="mcp_servers")
        for i, tool in enumerate(self.tools or ()):
            if tool.type not in (None, "custom"):
                raise InvalidRequest(
                    f"server tools ({tool.type!r}) are not supported; define client tools with name and "
                    "input_schema",
                    param=f"tools.{i}.type",
                )
            if not tool.name:
                raise InvalidRequest("a tool needs a name", param=f"tools.{i}.name")
        if self.tool_choice is not None and self.tool_choice.type == "tool" and not self.tool_choice.name:
            raise InvalidRequest("tool_choice of type 'tool' needs a name", param="tool_choice.name")


class MessagesRequest(_Conversation):
    max_tokens: Annotated[int, Field(ge=1)]
    temperature: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    container: Any = None

    def check_supported(self) -> None:
        super().check_supported()
        if self.container is not None:
            raise InvalidRequest("containers are not supported", param="container")


class CountTokensRequest(_Conversation):
    pass
