"""What a chat request asks of tool calling, and how it is carried out on a loaded model: the
messages and tools its chat template renders, the parser its output is read with, and the
constraint that enforces a required or named call."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from hfd.backends.constraints import ConstraintSpec
from hfd.daemon.structured import tool_call_spec
from hfd.daemon.tools import render
from hfd.daemon.tools.output import ToolOutput
from hfd.daemon.tools.parsers import family
from hfd.daemon.tools.validate import validate

if TYPE_CHECKING:
    from hfd.daemon.schema import ChatCompletionRequest

Mode = Literal["none", "auto", "required", "named"]

# Markers in a template's source that name the family its model writes calls in.
_DETECT = (("<tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"), ("<|python_tag|>", "llama3"))


def detect_parser(source: str | None) -> str:
    """The parser for a template: by the call marker it prints, ``hermes`` for the fallback
    prompt (templates with no tools), else plain JSON."""
    if not render.supports_tools(source):
        return render.FALLBACK_PARSER
    assert source is not None
    for marker, name in _DETECT:
        if marker in source:
            return name
    if '"parameters"' in source:  # Llama 3.x JSON calls without the python tag
        return "llama3"
    return "json"


@dataclass(frozen=True)
class ToolPlan:
    tools: list[dict[str, Any]]
    mode: Mode
    name: str | None  # the named function
    parallel: bool
    override: str | None  # [[models]] tool_parser

    @property
    def active(self) -> bool:
        return self.mode != "none"

    @property
    def constrained(self) -> bool:
        return self.mode in ("required", "named")

    def size(self) -> int:
        """Bytes the tools add to the prompt (for the check before tokenising)."""
        return len(json.dumps(self.tools)) if self.active else 0

    def render(
        self, model: object, messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str]:
        """(messages, tools for the template or None, the parser the template calls for)."""
        source = render.template_source(model, tools=self.active and bool(self.tools))
        tools = self.tools if self.active and self.tools else None
        if not render.supports_tools(source) and (tools or render.has_history(messages)):
            messages, tools = render.fallback_messages(messages, tools), None
        return messages, tools, detect_parser(source)

    def parser(self, detected: str) -> str:
        """The parser this request's output is read with, from the one its template calls for."""
        if self.constrained:
            return "json"
        return self.override or detected

    def output(self, detected: str) -> ToolOutput | None:
        if not self.active:
            return None
        return ToolOutput(family(self.parser(detected)), parallel=self.parallel and not self.constrained)

    def spec(self) -> ConstraintSpec:
        # One call, also when parallel_tool_calls is true: a grammar that allowed a list would
        # let a model that does not stop by itself append calls until max_tokens cut the JSON.
        return tool_call_spec(self.tools, self.name if self.mode == "named" else None, parallel=False)


def plan(req: ChatCompletionRequest, override: str | None = None) -> ToolPlan:
    validate(req)
    if override is not None:
        family(override)  # an unknown name in the config is an error, not a silent fallback
    tools = render.tool_dicts(req)
    choice = req.tool_choice
    mode: Mode
    name = None
    if not tools or choice == "none":
        mode = "none"
    elif choice is None or choice == "auto":
        mode = "auto"
    elif choice == "required":
        mode = "required"
    else:
        assert not isinstance(choice, str)
        mode, name = "named", choice.function.name
    return ToolPlan(tools, mode, name, req.parallel_tool_calls is not False, override)


# The parser each model (by snapshot identity) was read with, for replies served from the
# response cache without loading the model. Bounded: identities change when files do.
_KNOWN: OrderedDict[str, str] = OrderedDict()
_KNOWN_MAX = 256


def remember(identity: str, parser: str) -> None:
    _KNOWN[identity] = parser
    _KNOWN.move_to_end(identity)
    while len(_KNOWN) > _KNOWN_MAX:
        _KNOWN.popitem(last=False)


def remembered(identity: str | None) -> str | None:
    return _KNOWN.get(identity) if identity is not None else None
