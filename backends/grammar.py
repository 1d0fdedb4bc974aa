"""Constrained decoding with xgrammar: a model's compiled-grammar cache and the per-sequence matcher.

One :class:`GrammarCache` per loaded model: xgrammar's ``TokenizerInfo`` for the model's
tokenizer (its vocabulary laid out at the model's logits width, so the bitmask the sampler
allocates for a logits row is the one xgrammar fills), a ``GrammarCompiler`` (with xgrammar's
own cache of grammar pieces) and a bounded LRU of compiled grammars keyed by
:class:`~hfd.backends.constraints.ConstraintSpec`, so equal schemas compile once per model.

Compiling runs in the caller's thread (the service calls it in a worker thread before the
sequence joins the batch); matching runs on the engine's step thread, one matcher per sequence.
A step's constrained rows fill their masks and accept their tokens in one call each
(xgrammar's ``BatchGrammarMatcher``, in C++: a Python call per row cost more than the fill).

JSON is compiled without free whitespace (``any_whitespace=False``): the output is compact
JSON, and a model that would rather emit spaces than close an object cannot loop in them.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from hfd.backends import preload
from hfd.backends.constraints import ConstraintSpec
from hfd.client.errors import InvalidRequest

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# Compiled grammars kept per model: a schema is a few KiB to a few MiB compiled, and apps use a
# handful of schemas each.
DEFAULT_CACHE_SIZE = 64

# JSON Schema keywords xgrammar accepts but does not enforce: a schema using them would get
# output that may not validate, so it is refused (the guarantee is "it validates").
_UNENFORCED = ("uniqueItems", "dependentRequired", "dependentSchemas", "$dynamicRef", "$recursiveRef")


class CompiledConstraint:
    """A spec compiled for one model: what ``SamplingParams.constraint`` carries."""

    def __init__(self, spec: ConstraintSpec, compiled: Any) -> None:
        self.spec = spec
        self.compiled = compiled  # xgrammar.CompiledGrammar

    def matcher(self) -> GrammarMatcher:
        """A fresh matcher at the grammar's start, for one sequence."""
        return GrammarMatcher(self.compiled)


# One thread per batched fill: a row's fill is a microsecond or two, and on the 2-core box
# under load two threads made a 32-row fill 20x slower (0.5-0.8 ms against 28 us) than one,
# which still saves the per-row Python calls (76-120 us for 32 rows).
_FILL_THREADS = 1
_batch_local = threading.local()  # one BatchGrammarMatcher per step thread


def _batch_matcher() -> Any:
    batch = getattr(_batch_local, "matcher", None)
    if batch is None:
        import xgrammar as xgr

        batch = _batch_local.matcher = xgr.BatchGrammarMatcher(max_threads=_FILL_THREADS)
    return batch


class GrammarMatcher:
    """One sequence's position in its grammar (a ``TokenMatcher``); step thread only."""

    def __init__(self, compiled: Any) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)

    def fill_mask(self, bitmask: torch.Tensor, row: int) -> None:
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> None:
        if not self._matcher.accept_token(int(token_id)):
            _refused(token_id)

    @staticmethod
    def fill_many(matchers: Sequence[GrammarMatcher], bitmask: torch.Tensor) -> None:
        """Row ``i`` of ``bitmask`` from ``matchers[i]``, in one call (``constraints.fill_masks``)."""
        _batch_matcher().batch_fill_next_token_bitmask([m._matcher for m in matchers], bitmask)

    @staticmethod
    def accept_many(matchers: Sequence[GrammarMatcher], tokens: Sequence[int]) -> None:
        import xgrammar as xgr

        ok = xgr.BatchGrammarMatcher.batch_accept_token(
            [m._matcher for m in matchers], [int(t) for t in tokens]
        )
        for accepted, token in zip(ok, tokens, strict=True):
            if not accepted:
                _refused(token)

    @property
    def finished(self) -> bool:
        return bool(self._matcher.is_terminated())


def _refused(token_id: int) -> None:
    # The sampler chose from this matcher's mask, so a refusal means the mask was not applied
    # to this row: the output can no longer be guaranteed, and the log says so.
    log.warning("constrained decoding: token outside the grammar", extra={"token": int(token_id)})


class GrammarCache:
    """The compiled grammars of one model (thread-safe)."""

    def __init__(
        self,
        hf_tokenizer: Any,
        *,
        vocab_size: int,
        stop_token_ids: Iterable[int] = (),
        engine: str = "torch",
        size: int = DEFAULT_CACHE_SIZE,
        threads: int = 2,
    ) -> None:
        preload.wait_for_transformers()  # xgrammar imports transformers (the first import here)
        import xgrammar as xgr

        stops = sorted({int(t) for t in stop_token_ids}) or None
        self.tokenizer_info = xgr.TokenizerInfo.from_huggingface(
            hf_tokenizer, vocab_size=int(vocab_size), stop_token_ids=stops
        )
        self._compiler = xgr.GrammarCompiler(self.tokenizer_info, max_threads=max(1, threads))
        self._engine = engine
        self._size = max(1, size)
        self._lock = threading.Lock()
        self._compiled: OrderedDict[ConstraintSpec, CompiledConstraint] = OrderedDict()

    def __len__(self) -> int:
        return len(self._compiled)

    def compile(self, spec: ConstraintSpec) -> CompiledConstraint:
        with self._lock:
            hit = self._compiled.get(spec)
            if hit is not None:
                self._compiled.move_to_end(spec)
                return hit
        # Outside the lock: a slow schema must not hold up other compiles (two threads compiling
        # the same new spec both succeed; the second result replaces the first).
        compiled = CompiledConstraint(spec, self._compile(spec))
        with self._lock:
            self._compiled[spec] = compiled
            self._compiled.move_to_end(spec)
            while len(self._compiled) > self._size:
                self._compiled.popitem(last=False)
        return compiled

    def _compile(self, spec: ConstraintSpec) -> Any:
        param = spec.param
        try:
            if spec.kind == "json_object":
                # Any JSON object (not any value, as xgrammar's builtin JSON grammar allows).
                return self._compiler.compile_json_schema(
                    '{"type": "object"}', any_whitespace=False, strict_mode=False
                )
            if spec.kind == "json_schema":
                schema = prepare_schema(spec.value, param)
                return self._compiler.compile_json_schema(
                    schema, any_whitespace=False, strict_mode=spec.strict
                )
            if spec.kind == "regex":
                return self._compiler.compile_regex(spec.value)
            if spec.kind == "choice":
                return self._compiler.compile_grammar(choice_grammar(spec.value))
            if spec.kind == "grammar":
                return self._compiler.compile_grammar(spec.value)
        except InvalidRequest:
            raise
        except Exception as exc:  # xgrammar raises RuntimeError (and others) with its reason
            raise InvalidRequest(
                f"the {spec.kind} does not compile for the {self._engine} engine: {_reason(exc)}", param=param
            ) from exc
        raise InvalidRequest(f"unknown constraint kind {spec.kind!r}", param=param)


def choice_grammar(value: str) -> str:
    """An EBNF grammar matching exactly one of the JSON list of strings ``value``."""
    choices = json.loads(value)
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise InvalidRequest("guided_choice must be a non-empty list of strings", param="guided_choice")
    # A JSON string literal is a valid EBNF string literal in xgrammar's syntax.
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


def prepare_schema(value: str, param: str) -> str:
    """The schema as xgrammar should compile it: refused when it uses what xgrammar would not
    enforce (so output could fail it), and with length-bounded strings given a pattern.

    xgrammar 0.2 compiles ``minLength``/``maxLength`` strings to a character class that lets raw
    control characters through (invalid JSON); a pattern string's characters are JSON-checked,
    so the same bounds are given as ``^.{min,max}$`` (no escapes: still valid, never invalid).
    """
    try:
        schema = json.loads(value)
    except ValueError as exc:
        raise InvalidRequest(f"the JSON schema is not valid JSON: {exc}", param=param) from exc
    check_schema(schema, param)
    return json.dumps(_bound_strings(schema), sort_keys=True)


def _bound_strings(node: Any) -> Any:
    if isinstance(node, list):
        return [_bound_strings(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bound_strings(v) for k, v in node.items()}
    kinds = out.get("type")
    stringy = kinds == "string" or (isinstance(kinds, list) and "string" in kinds)
    bounded = "minLength" in out or "maxLength" in out
    if stringy and bounded and "pattern" not in out and "format" not in out:
        low = int(out.get("minLength", 0))
        high = out.get("maxLength")
        out["pattern"] = f"^.{{{low},{'' if high is None else int(high)}}}$"
        out.pop("minLength", None)  # the pattern holds them (xgrammar ignores them beside one)
        out.pop("maxLength", None)
    return out


def check_schema(schema: Any, param: str) -> None:
    """Refuse a schema that uses what xgrammar would not enforce (so output could fail it)."""
    for path, key, sub, parent in _walk(schema, "#"):
        if key in _UNENFORCED and sub not in (False, None, [], {}):
            raise InvalidRequest(
                f"JSON schema keyword {key!r} (at {path}) is not supported by constrained decoding",
                param=param,
            )
        if key == "pattern" and isinstance(parent, dict) and ("minLength" in parent or "maxLength" in parent):
            raise InvalidRequest(
                f"JSON schema string at {path} has a pattern and minLength/maxLength: constrained decoding "
                "enforces only the pattern; put the length in the pattern (e.g. ^[a-z]{1,8}$)",
                param=param,
            )
        if key == "$ref" and isinstance(sub, str) and not sub.startswith("#"):
            raise InvalidRequest(
                f"JSON schema $ref {sub!r} (at {path}): only references within the schema ('#/...') are supported",
                param=param,
            )


def _walk(node: Any, path: str) -> Iterator[tuple[str, str, Any, Any]]:
    if isinstance(node, dict):
        for key, sub in node.items():
            yield path, str(key), sub, node
            yield from _walk(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _walk(sub, f"{path}/{i}")


def _reason(exc: BaseException) -> str:
    # xgrammar's messages start with a "[hh:mm:ss] /project/cpp/file.cc:123: " prefix.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[") and ": " in text:
        text = text.split(": ", 1)[1]
        if text.startswith("/") and ": " in text:
            text = text.split(": ", 1)[1]
    return text


_OWNERS_LOCK = threading.Lock()


def grammars_for(
    owner: Any, hf_tokenizer: Any, *, vocab_size: int, stop_token_ids: Iterable[int], engine: str
) -> GrammarCache:
    """The grammar cache of one loaded model (``owner``), made on its first constrained request:
    models never asked for structured output pay nothing for it."""
    cache: GrammarCache | None = getattr(owner, "_grammar_cache", None)
    if cache is not None:
        return cache
    with _OWNERS_LOCK:
        cache = getattr(owner, "_grammar_cache", None)
        if cache is None:
            cache = GrammarCache(
                hf_tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids, engine=engine
            )
            owner._grammar_cache = cache
    return cache


def logits_width(model: Any, fallback: int) -> int:
    """How many logits a torch model's step gives per row (its output embedding's rows; often
    padded past the tokenizer's vocabulary): the width xgrammar's bitmask must cover."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    weight = getattr(head, "weight", None)
    return int(weight.shape[0]) if weight is not None else int(fallback)
