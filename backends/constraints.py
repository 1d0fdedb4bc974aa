"""Constrained decoding: the seam between what a request asks for and the engine that enforces it.

A request's structured output (``response_format``, a required or named tool call, a regex or a
choice) becomes a :class:`ConstraintSpec`: plain data, comparable, hashable, so it is also the
key of the compiled-grammar cache. Engines enforce it in their own way:

- the torch engines compile the spec once per model and spec (a grammar engine, off the step
  thread: :meth:`Constrainable.compile_constraint`, which the service calls in a worker thread
  before the sequence joins the batch) and give each sequence its own :class:`TokenMatcher`;
  the batched sampler asks every constrained row's matcher for the tokens it allows, masks the
  rest, and tells the matcher which token was chosen;
- the OpenVINO engine hands the spec to OpenVINO GenAI's own structured output.

An engine that cannot enforce a kind of spec does not implement :class:`Constrainable` for it;
the request then gets a clear error naming the engine, never unconstrained text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

ConstraintKind = Literal["json_object", "json_schema", "regex", "choice", "grammar"]


@dataclass(frozen=True)
class ConstraintSpec:
    """What the output must match.

    ``value`` is the canonical JSON text of the schema for ``json_schema`` (sorted keys, so
    equal schemas share one compiled grammar), the pattern for ``regex``, the JSON list of
    strings for ``choice``, an EBNF grammar for ``grammar``, and ``""`` for ``json_object``.
    ``strict`` (``json_schema``): the schema is read as OpenAI's strict mode does, objects
    without ``additionalProperties`` allow no other properties; when false, JSON Schema's own
    defaults apply. ``param`` is the request field the spec came from, named in errors; it is
    not part of the key (the same schema from ``response_format`` or ``guided_json`` compiles once).
    """

    kind: ConstraintKind
    value: str = ""
    strict: bool = True
    param: str = field(default="response_format", compare=False)


@runtime_checkable
class TokenMatcher(Protocol):
    """One sequence's position in its grammar (torch engines). Not thread-safe: used only on
    the engine's step thread, by one sequence."""

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the allowed next tokens of this sequence into row ``row`` of ``bitmask``
        (int32, ``[rows, ceil(vocab / 32)]``, one bit per token, as xgrammar lays it out)."""

    def accept(self, token_id: int) -> None:
        """Advance past the chosen token."""

    @property
    def finished(self) -> bool:
        """The grammar is complete: the sequence ends here (finish reason ``stop``)."""


def fill_masks(matchers: Sequence[TokenMatcher], bitmask: torch.Tensor) -> None:
    """Row ``i`` of ``bitmask`` from ``matchers[i]``, for a whole step's constrained rows.

    A matcher class may fill many rows in one call (``fill_many(matchers, bitmask)``, as the
    xgrammar matcher does in C++); rows of other classes are filled one by one.
    """
    many = _batched(matchers, "fill_many")
    if many is not None:
        many(matchers, bitmask)
        return
    for i, matcher in enumerate(matchers):
        matcher.fill_mask(bitmask, i)


def accept_tokens(matchers: Sequence[TokenMatcher], tokens: Sequence[int]) -> None:
    """``matchers[i].accept(tokens[i])`` for every row, in one call where the class has one
    (``accept_many``)."""
    many = _batched(matchers, "accept_many")
    if many is not None:
        many(matchers, tokens)
        return
    for matcher, token in zip(matchers, tokens, strict=True):
        matcher.accept(token)


def _batched(matchers: Sequence[TokenMatcher], name: str) -> Any:
    kind = type(matchers[0]) if matchers else None
    many = getattr(kind, name, None)
    return many if many is not None and all(type(m) is kind for m in matchers) else None


@runtime_checkable
class Constrainable(Protocol):
    """A generation model that enforces :class:`ConstraintSpec`s."""

    def compile_constraint(self, spec: ConstraintSpec) -> Any:
        """Compile ``spec`` for this model's tokenizer (cached), off the step thread. Raises
        ``InvalidRequest`` (param ``response_format`` or ``tools``) for a spec that does not
        compile. The result goes into ``SamplingParams.constraint`` and the engine makes one
        :class:`TokenMatcher` per sequence from it in ``add``."""
