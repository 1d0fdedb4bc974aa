"""Chat messages and tools in the form Hugging Face chat templates read, as transformers'
``apply_chat_template(messages, tools=[...])`` takes them, and the fallback for templates that
know no tools.

- An assistant's ``tool_calls`` keep OpenAI's shape, except ``function.arguments``, which
  becomes a dict (the templates iterate it or ``tojson`` it);
- a ``tool`` message keeps ``tool_call_id`` and gains ``name``, the function of the call it
  answers (several templates print it);
- content parts become text.

A template with no tool support (``tools`` nowhere in its source) gets the tools as a system
prompt in the Hermes form (``<tools>`` with one JSON schema a line, calls asked for inside
``<tool_call>`` tags, as vLLM and Ollama do for such models), earlier calls as ``<tool_call>``
text and tool replies as user turns in ``<tool_response>`` tags; its output is then read by the
``hermes`` parser.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hfd.daemon.schema import ChatCompletionRequest, ChatMessage

FALLBACK_PARSER = "hermes"

FALLBACK_PROMPT = """# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""


def tool_dicts(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The request's tools as the templates read them (OpenAI's shape, no ``None`` fields)."""
    return [t.model_dump(exclude_none=True) for t in req.tools or []]


def template_source(model: object, *, tools: bool) -> str | None:
    """The template an engine renders with, as transformers picks it: a tokenizer with named
    templates uses ``tool_use`` for a request with tools when it has one, else ``default``."""
    template = getattr(model, "chat_template", None)
    if isinstance(template, dict):
        name = "tool_use" if tools and "tool_use" in template else "default"
        template = template.get(name)
    return template if isinstance(template, str) else None


def supports_tools(source: str | None) -> bool:
    return source is not None and "tools" in source


def hf_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.text()}
        if m.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": json.loads(c.function.arguments or "{}"),
                    },
                }
                for c in m.tool_calls
            ]
            names.update((c.id, c.function.name) for c in m.tool_calls)
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_call_id
            name = m.name or names.get(m.tool_call_id or "")
            if name:
                msg["name"] = name
        out.append(msg)
    return out


def fallback_messages(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """``messages`` (from ``hf_messages``) for a template without tool support."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>\n"
                + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]})
                + "\n</tool_call>"
                for c in m["tool_calls"]
            )
            text = (m["content"] + "\n" if m["content"] else "") + calls
            out.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    if tools:
        prompt = FALLBACK_PROMPT.format(tools="\n".join(json.dumps(t) for t in tools))
        if out and out[0]["role"] in ("system", "developer"):
            out[0] = {"role": out[0]["role"], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def has_history(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
