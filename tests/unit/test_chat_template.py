"""Chat templates rendered with jinja2 alone (``backends.chat_template``, through a recorded
tokenizer) give exactly what transformers' ``apply_chat_template`` gives, tools included."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jinja2", reason="chat templates are jinja2")
transformers = pytest.importorskip("transformers", reason="the oracle is transformers' own rendering")

from support.models import tiny_llama  # noqa: E402
from support.tool_templates import LLAMA31, MISTRAL, QWEN  # noqa: E402

from hfd.backends import chat_template  # noqa: E402
from hfd.backends.tokenizer_facts import RecordedTokenizer, tokenizer_facts  # noqa: E402

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city (é, ü: not escaped)",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
CHATS: list[list[dict[str, Any]]] = [
    [{"role": "user", "content": "hi <b>there</b>"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call00001",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                }
            ],
        },
        {"role": "tool", "name": "get_weather", "content": '{"temp": 21}', "tool_call_id": "call00001"},
        {"role": "user", "content": "and tomorrow?"},
    ],
]
# A template with a ``generation`` block (training masks), loop controls and raise_exception.
BLOCKS = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
    "{% else %}{{ m['role'] }}: {{ m['content'] | tojson }}\n{% endif %}{% endfor %}"
    "{% if messages | length > 9 %}{{ raise_exception('too long') }}{% endif %}"
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(tiny_llama(), tmp_path_factory.mktemp("chat") / "llama"))


def _pair(model: Path, template: str | dict[str, str], tmp_path: Path) -> tuple[Any, RecordedTokenizer]:
    hf = transformers.AutoTokenizer.from_pretrained(model, local_files_only=True)
    hf.chat_template = template
    hf.save_pretrained(tmp_path)
    for name in ("config.json",):
        shutil.copyfile(model / name, tmp_path / name)
    facts = tokenizer_facts(tmp_path, trust_remote_code=False, cache_dir=None, config=False, needed="a test")
    return transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True), RecordedTokenizer(
        facts
    )


@pytest.mark.parametrize(
    "template", [QWEN, LLAMA31, MISTRAL, BLOCKS], ids=["qwen", "llama31", "mistral", "blocks"]
)
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["plain", "tools"])
@pytest.mark.parametrize("chat", range(len(CHATS)))
def test_rendering_matches_transformers(
    model: Path, tmp_path: Path, template: str, tools: list[dict[str, Any]] | None, chat: int
) -> None:
    hf, recorded = _pair(model, template, tmp_path)
    for prompt in (True, False):
        expected = hf.apply_chat_template(
            CHATS[chat], tools=tools, tokenize=False, add_generation_prompt=prompt
        )
        got = recorded.apply_chat_template(CHATS[chat], tools=tools, add_generation_prompt=prompt)
        assert got == expected


def test_named_templates_pick_tool_use_with_tools_and_default_without(model: Path, tmp_path: Path) -> None:
    hf, recorded = _pair(
        model, {"default": "D{{ bos_token }}", "tool_use": "T{{ tools | length }}"}, tmp_path
    )
    for tools in (None, TOOLS):
        assert recorded.apply_chat_template(CHATS[0], tools=tools) == hf.apply_chat_template(
            CHATS[0], tools=tools, tokenize=False
        )
    assert recorded.apply_chat_template(CHATS[0], tools=TOOLS) == "T1"


def test_what_transformers_refuses_is_refused() -> None:
    with pytest.raises(ValueError, match="none is the default"):
        chat_template.select({"a": "x", "b": "y"}, None)
    with pytest.raises(ValueError, match="no chat template"):
        chat_template.select(None, None)
    import jinja2

    with pytest.raises(jinja2.TemplateError, match="too long"):
        chat_template.render(BLOCKS, [{"role": "user", "content": "x"}] * 10, tools=None,
                             add_generation_prompt=False, special_tokens={})  # fmt: skip
