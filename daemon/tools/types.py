"""The request fields of tool calling, as OpenAI defines them: function tools, ``tool_choice``,
and the tool history in messages (an assistant's ``tool_calls``, ``role: "tool"`` replies).

Shapes are checked by pydantic (422 for a body of the wrong shape); the rules OpenAI answers 400
for (names, the number of tools, a named choice that names no tool) are in ``validate``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class _Base(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)


class FunctionDef(_Base):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of an object; None: no parameters
    strict: bool | None = None


class Tool(_Base):
    type: Literal["function"] = "function"
    function: FunctionDef


class FunctionName(_Base):
    name: str


class NamedToolChoice(_Base):
    type: Literal["function"] = "function"
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(_Base):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallItem(_Base):
    """One call in an assistant message of the history."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction
