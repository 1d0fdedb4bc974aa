"""Structured output on the OpenVINO engine: the spec as OpenVINO GenAI's ``StructuredOutputConfig``.

GenAI enforces the grammar itself (with xgrammar, inside ``ContinuousBatchingPipeline``, per
request), so the engine process only needs the config's fields. The daemon still compiles the
spec once with its own xgrammar cache for the model (``backends.grammar``): a schema that does
not compile, or uses what xgrammar would not enforce, is then a 400 before the request reaches
the engine process, rather than a failed sequence after it. GenAI 2026.4 takes ``json_schema``,
``regex`` and ``grammar`` (EBNF); ``json_object`` and ``choice`` are given as one of those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hfd.backends.constraints import ConstraintSpec
from hfd.backends.grammar import choice_grammar, grammars_for, prepare_schema


@dataclass(frozen=True)
class OpenVINOConstraint:
    """What ``SamplingParams.constraint`` carries for the OpenVINO engine."""

    spec: ConstraintSpec
    fields: dict[str, str]  # StructuredOutputConfig keyword arguments

    def matcher(self) -> Any:
        raise TypeError("the OpenVINO engine enforces structured output itself; it has no token matcher")


def structured_output_fields(spec: ConstraintSpec) -> dict[str, str]:
    # JSON goes as a schema, which GenAI compiles with free whitespace between tokens. The compact
    # grammar the torch engine uses cannot be handed over as EBNF: GenAI 2026.4 bundles an older
    # xgrammar whose parser knows neither its open repetitions ({n, -1}) nor its Regex rules.
    if spec.kind == "json_object":
        return {"json_schema": '{"type": "object"}'}
    if spec.kind == "json_schema":
        return {"json_schema": prepare_schema(spec.value, spec.param)}
    if spec.kind == "regex":
        return {"regex": spec.value}
    if spec.kind == "choice":
        return {"grammar": choice_grammar(spec.value)}
    return {"grammar": spec.value}


def compile_for_openvino(
    owner: Any, hf_tokenizer: Any, *, vocab_size: int, stop_token_ids: Any, spec: ConstraintSpec
) -> OpenVINOConstraint:
    grammars_for(
        owner, hf_tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids, engine="openvino"
    ).compile(spec)
    return OpenVINOConstraint(spec, structured_output_fields(spec))
