"""Speculative decoding on the OpenVINO engine: prompt lookup, or a draft model.

GenAI's ``ContinuousBatchingPipeline`` proposes the next tokens by finding the last few
generated tokens earlier in the prompt (an n-gram of up to ``max_ngram_size`` tokens) and copying
the ``num_assistant_tokens`` that followed it there; one step of the model then checks them all
and keeps the longest run it agrees with. Greedy output is unchanged; a step may emit several
tokens. It wins where the answer repeats its prompt (editing code, quoting a given text) and
costs a little where nothing matches (every step then checks candidates that are thrown away).

A model turns it on with ``[[models]] options = { speculative = "prompt-lookup" }``; off by
default (see docs/engines.md for the measurements). ``lookup_tokens`` and ``lookup_ngram`` tune
the candidates per step and the longest n-gram looked up.

A draft model (``options = { draft_model = "org/name" }``, GenAI's ``draft_model``) proposes
``draft_tokens`` tokens per step by decoding them itself; it must share the model's tokenizer.
The model manager resolves (pulls) it like any model and hands its directory over as
``draft_model_path``; the engine exports it like any model, and the engine process builds
``openvino_genai.draft_model`` from the exported directory (a pipeline object cannot cross the
pipe). Greedy output is unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from hfd.backends.base import LoadOptions
from hfd.client.errors import InvalidRequest

PROMPT_LOOKUP: Final = "prompt-lookup"
DRAFT_MODEL: Final = "draft_model"  # the model option naming the draft's reference
DRAFT_PATH: Final = "draft_model_path"  # its directory, as the model manager resolved it
_DRAFT_DIR: Final = "hfd_draft_model_dir"  # the exported draft, in the engine process's properties
_OFF: Final = frozenset({"", "off", "none", "false", "no"})
# Bounds on the tuning options: GenAI checks a step's candidates in one forward pass each.
_MAX_TOKENS: Final = 64
_MAX_NGRAM: Final = 16


@dataclass(frozen=True)
class PromptLookup:
    num_assistant_tokens: int = 5
    max_ngram_size: int = 3

    def properties(self, properties: dict[str, Any]) -> dict[str, Any]:
        """The pipeline's properties with prompt lookup on."""
        return {**properties, "prompt_lookup": True}

    def fields(self) -> dict[str, Any]:
        """The ``GenerationConfig`` fields every request of the model gets."""
        return {"num_assistant_tokens": self.num_assistant_tokens, "max_ngram_size": self.max_ngram_size}


@dataclass(frozen=True)
class DraftModel:
    source: str  # the draft's resolved directory (its export is made from it)
    num_assistant_tokens: int = 5

    def properties(self, properties: dict[str, Any], exported: str) -> dict[str, Any]:
        """The pipeline's properties with the exported draft's directory."""
        return {**properties, _DRAFT_DIR: exported}

    def fields(self) -> dict[str, Any]:
        return {"num_assistant_tokens": self.num_assistant_tokens}


def _bounded(opts: LoadOptions, name: str, default: int, top: int) -> int:
    value = opts.extra.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if isinstance(value, bool) or not 1 <= number <= top:
        raise InvalidRequest(
            f"the model option {name} must be an integer in [1, {top}]", param=f"options.{name}"
        )
    return number


def speculative_plan(opts: LoadOptions) -> PromptLookup | DraftModel | None:
    """The model options ``speculative`` and ``draft_model``: None (off, the default), prompt
    lookup or a draft model; anything else is refused, naming the option, rather than ignored."""
    raw = opts.extra.get("speculative", "")
    if opts.extra.get(DRAFT_MODEL):
        if str(raw).strip().lower() not in _OFF:
            raise InvalidRequest(
                "the model options speculative and draft_model are two kinds of speculative decoding: choose one",
                param="options.draft_model",
            )
        source = opts.extra.get(DRAFT_PATH)
        if not source:
            raise InvalidRequest(
                "the model option draft_model is resolved by the model manager; no draft directory was given",
                param="options.draft_model",
            )
        return DraftModel(
            str(source), _bounded(opts, "draft_tokens", DraftModel.num_assistant_tokens, _MAX_TOKENS)
        )
    value = str(raw).strip().lower() if raw is not False else ""
    if value in _OFF:
        return None
    if value != PROMPT_LOOKUP:
        raise InvalidRequest(
            f"the model option speculative must be {PROMPT_LOOKUP!r} or 'off' on the openvino engine, not {raw!r}",
            param="options.speculative",
        )
    return PromptLookup(
        num_assistant_tokens=_bounded(opts, "lookup_tokens", PromptLookup.num_assistant_tokens, _MAX_TOKENS),
        max_ngram_size=_bounded(opts, "lookup_ngram", PromptLookup.max_ngram_size, _MAX_NGRAM),
    )


def warm_up_fields(properties: dict[str, Any]) -> dict[str, Any]:
    """What the engine's warm-up request adds to its config: a speculative pipeline refuses
    requests without the candidates' fields."""
    if properties.get("prompt_lookup"):
        return PromptLookup().fields()
    return DraftModel("").fields() if properties.get(_DRAFT_DIR) or properties.get("draft_model") else {}


def pipeline_properties(properties: dict[str, Any], device: str) -> dict[str, Any]:
    """The properties the engine process builds its pipeline with: an exported draft's
    directory becomes GenAI's ``draft_model`` on the same device, compiled alike."""
    draft = properties.get(_DRAFT_DIR)
    if not draft:
        return dict(properties)
    import openvino_genai as ov_genai

    rest = {k: v for k, v in properties.items() if k != _DRAFT_DIR}
    return {**rest, "draft_model": ov_genai.draft_model(draft, device, **rest)}


def export_draft(opts: LoadOptions, plan: DraftModel, device: str) -> Path:
    """The draft's OpenVINO IR directory, exported into the cache like any model's (same
    weight format rule, same cache), from the directory the model manager resolved."""
    from hfd.backends.openvino_export import prepare_ir, resolve_weight_format

    draft = dataclasses.replace(
        opts, path=Path(plan.source), extra={k: v for k, v in opts.extra.items() if k == "allow_pickle"}
    )
    directory, _ = prepare_ir(draft, "generate", resolve_weight_format(draft, device))
    return directory
