"""``suffix`` on completions: fill-in-the-middle, for models whose tokenizer has FIM tokens.

The prompt becomes ``<prefix-token>{prompt}<suffix-token>{suffix}<middle-token>`` (the PSM
order the code models were trained with) and the model writes the middle. The marker families
are the ones code models ship: StarCoder/SantaCoder/DeepSeek-style ``<fim_prefix>``, Qwen2.5-Coder's
``<|fim_prefix|>``, CodeGemma's ``<|fim_prefix|>`` too, Code Llama's ``<PRE>``. A model with none of
them gets a 400 naming ``suffix``, as before.
"""

from __future__ import annotations

from typing import Any

from hfd.client.errors import InvalidRequest

MARKERS: tuple[tuple[str, str, str], ...] = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<PRE>", "<SUF>", "<MID>"),
)


def markers(model: Any) -> tuple[str, str, str] | None:
    lookup = getattr(model, "special_token_id", None)
    if not callable(lookup):
        return None
    for triple in MARKERS:
        if all(lookup(t) is not None for t in triple):
            return triple
    return None


def prompt(model: Any, prefix: str, suffix: str, name: str) -> str:
    found = markers(model)
    if found is None:
        raise InvalidRequest(
            f"suffix needs a model with fill-in-the-middle tokens (<fim_prefix> ...); model {name!r} has none",
            param="suffix",
        )
    pre, suf, mid = found
    return f"{pre}{prefix}{suf}{suffix}{mid}"
