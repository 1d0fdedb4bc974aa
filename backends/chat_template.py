"""A model's chat template rendered as transformers renders it, with jinja2 alone.

transformers (``apply_chat_template`` of its tokenizers, ``utils.chat_template_utils``) renders in
an immutable sandbox with ``trim_blocks`` and ``lstrip_blocks``, the loop controls, its own
``tojson`` (no HTML escaping, ``ensure_ascii`` off), the globals ``raise_exception`` and
``strftime_now``, a ``{% generation %}`` block (which only marks assistant text), and the
tokenizer's named special tokens (``bos_token`` ...) as variables; a model with several named
templates uses ``tool_use`` when tools are given and it has one, else ``default``. The same
here, so an engine that does not import transformers (it takes seconds, with torch) renders the
same prompt: ``tests/unit/test_chat_template.py`` checks that against transformers itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any


def select(template: str | Mapping[str, str] | None, tools: Sequence[Any] | None) -> str:
    """The template to render: the model's one, or of its named ones the one transformers picks;
    ``ValueError`` when there is none to pick."""
    if isinstance(template, Mapping):
        if tools is not None and "tool_use" in template:
            return template["tool_use"]
        if "default" in template:
            return template["default"]
        raise ValueError(f"this model has several chat templates and none is the default: {sorted(template)}")
    if not template:
        raise ValueError("this model has no chat template")
    return template


def render(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Sequence[Mapping[str, Any]] | None,
    add_generation_prompt: bool,
    special_tokens: Mapping[str, str],
) -> str:
    """The prompt text; jinja2's errors (the template's own ``raise_exception`` too) pass through."""
    return str(
        _compiled(template).render(
            messages=list(messages),
            tools=list(tools) if tools is not None else None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
        )
    )


@lru_cache(maxsize=64)
def _compiled(template: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: the body, as it is (transformers uses
        the block only to find assistant tokens for training masks)."""

        tags = {"generation"}  # noqa: RUF012 (jinja2 declares it on its base class)

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: Any = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(template)
