"""Model options (``[[models]] options = { ... }``, read by the engines as ``LoadOptions.extra``):
one declaration per option, and the checks a load makes before any engine is tried.

Each engine's registry record lists the options it reads (``EngineRecord.options``, made of the
declarations here), so this module lists no engine and the registry no option text. A load:

- refuses a name no engine reads (a typo, ``threds = 2``), naming the known ones and the
  closest one;
- refuses an option of other tasks (``draft_model`` on an embedding model);
- skips untried an engine that does not read one of the model's options (``draft_model`` on
  torch), saying why; when no candidate engine reads them all, the load is refused naming each
  option and the engines that read it, before anything is pulled for it (a draft model).

So an option is never silently ignored: the model is served with it, or not at all.
A ``hint`` is the exception: a test hook an engine that does not read it may serve without.

Nothing here imports an engine.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from hfd.backends.base import Task
from hfd.backends.openvino_cpu import ACTIVATION_GROUP_OPTION
from hfd.backends.openvino_speculative import DRAFT_MODEL
from hfd.client.errors import InvalidRequest

GENERATE: Final = frozenset({"generate"})


@dataclass(frozen=True)
class ModelOption:
    name: str
    summary: str  # one line, for docs/models.md and errors
    tasks: frozenset[Task] | None = None  # the tasks it applies to; None: every task
    # A test hook: an engine that does not read it serves as if it were not set.
    hint: bool = False
    # In an engine's record: the only values that engine honours (lower case); None: any.
    values: frozenset[str] | None = None

    def only(self, *values: str) -> ModelOption:
        """This option as an engine that honours only ``values`` of it reads it."""
        return dataclasses.replace(self, values=frozenset(v.lower() for v in values))

    def honours(self, value: Any) -> bool:
        return self.values is None or str(value).strip().lower() in self.values


# -- read by the real engines
DTYPE = ModelOption(
    "dtype", "the dtype weights are computed in: float32, float16 or bfloat16 (default: the engine's)"
)
PREFIX_CACHING = ModelOption(
    "prefix_caching",
    "reuse the KV cache of a prompt's repeated prefix (default: the prefix_caching setting)",
    GENERATE,
)
PREFIX_CACHE_BYTES = ModelOption(
    "prefix_cache_bytes",
    "bytes of finished sequences' K/V kept for prefix reuse (default: the model's KV reservation)",
    GENERATE,
)
SPLIT_FUSE = ModelOption(
    "split_fuse", "GenAI's dynamic split-fuse: prefills share steps with decodes (default false)", GENERATE
)
PIPELINE_PROCESS = ModelOption(
    "pipeline_process",
    "run GenAI's pipeline in a process of its own (default true)",
    frozenset({"generate", "vision-chat"}),
)
KV_CACHE_GB = ModelOption(
    "kv_cache_gb", "the paged KV cache's size in GiB (default: the memory estimate's KV part)", GENERATE
)
ACTIVATION_GROUP = ModelOption(
    ACTIVATION_GROUP_OPTION,
    "int8/int4 weights on the CPU: activations are quantized in groups of this many values before "
    "each matmul; 0 off (default: 128 for int8 weights, and int4 ones whose groups of 128 fit the model, "
    "with bf16 compute on AVX-512 VNNI CPUs without AMX; 0 for GGUF files; else OpenVINO's 32)",
    GENERATE,
)
SPECULATIVE = ModelOption("speculative", '"prompt-lookup": prompt-lookup decoding (default off)', GENERATE)
LOOKUP_TOKENS = ModelOption("lookup_tokens", "prompt lookup: candidate tokens per step (default 5)", GENERATE)
LOOKUP_NGRAM = ModelOption(
    "lookup_ngram", "prompt lookup: the longest n-gram looked up (default 3)", GENERATE
)
DRAFT = ModelOption(
    DRAFT_MODEL, "a draft model's reference, for speculative decoding (pulled like any model)", GENERATE
)
DRAFT_TOKENS = ModelOption("draft_tokens", "draft model: tokens it proposes per step (default 5)", GENERATE)
GGUF_FILE = ModelOption(
    "gguf_file", "the snapshot's GGUF file to serve (GenAI reads it; no export)", GENERATE
)
TEST_FAULT = ModelOption(
    "test_fault",
    'tests only, with HFD_TEST_FAULTS=1: "warmup" or "probe" crashes the engine there',
    hint=True,
)

# -- read by the fake engine (tests)
FAKE: Final[tuple[ModelOption, ...]] = tuple(
    ModelOption(name, summary)
    for name, summary in (
        ("step_ms", "latency of each generation step"),
        ("batch_ms", "latency of each embedding batch"),
        ("load_ms", "latency of the load"),
        ("fail_at_load", "the load fails (a text is the message)"),
        ("fail_at_step", "the N-th step fails"),
        ("fail_at_batch", "the N-th embedding batch fails"),
        ("die_at_step", "the engine dies at the N-th step"),
        ("eos_after", "eos as the N-th generated token"),
        ("dimensions", "embedding size"),
        ("max_length", "tokens per input"),
        ("context_length", "the context length"),
        ("memory_bytes", "the memory reported"),
    )
)


def known() -> dict[str, ModelOption]:
    """Every option some registered engine reads, by name."""
    from hfd.backends import registry  # the registry's records are made of this module's options

    table: dict[str, ModelOption] = {}
    for record in registry.RECORDS:
        for option in record.options:
            table.setdefault(option.name, dataclasses.replace(option, values=None))
    return table


def readers(name: str) -> list[str]:
    """The engines that read option ``name``, as ``engine`` or ``engine with value or value only``."""
    from hfd.backends import registry

    out = []
    for record in registry.RECORDS:
        for option in record.options:
            if option.name == name:
                only = f" with {' or '.join(sorted(option.values))} only" if option.values is not None else ""
                out.append(f"{record.name}{only}")
    return out


def check_names(options: Mapping[str, Any], task: Task, *, keys: Iterable[str] = ()) -> None:
    """``InvalidRequest`` for an option no engine reads or one that does not apply to ``task``.
    ``keys``: the ``[[models]]`` keys beside ``options``, named when an option is one of them."""
    table = known()
    keys = set(keys)
    for name in options:
        option = table.get(name)
        if option is None:
            raise InvalidRequest(
                _unknown(name, keys), param=f"options.{name}", details={"known": sorted(_offered_names())}
            )
        if option.tasks is not None and task not in option.tasks:
            raise InvalidRequest(
                f"the model option {name} applies to {' and '.join(sorted(option.tasks))} models, "
                f"not to this {task} model",
                param=f"options.{name}",
            )


def _offered_names() -> list[str]:
    """The options of the engines offered to users, for messages: the fake engine's (tests
    pin it) are accepted but never suggested."""
    from hfd.backends import registry

    return list(dict.fromkeys(o.name for r in registry.RECORDS if r.default_offer for o in r.options))


def _unknown(name: str, keys: set[str]) -> str:
    if name in keys:
        return f"{name} is a [[models]] key, not a model option: write it beside options, not in it"
    close = difflib.get_close_matches(name, [*_offered_names(), *keys], n=1)
    hint = ""
    if close:
        hint = f" (did you mean {close[0]!r}" + (", a [[models]] key?)" if close[0] in keys else "?)")
    return f"unknown model option {name!r}{hint}; the engines read: {by_engine()}"


def by_engine() -> str:
    """Each offered engine's options, for messages: ``torch: dtype, ...; openvino: ...``."""
    from hfd.backends import registry

    return "; ".join(
        f"{r.name}: {', '.join(o.name for o in r.options)}"
        for r in registry.RECORDS
        if r.options and r.default_offer
    )


def unread(engine: str, options: Mapping[str, Any]) -> list[str]:
    """The names of ``options`` that ``engine`` does not honour as given (hints aside)."""
    from hfd.backends import registry

    declared = {o.name: o for o in registry.record(engine).options}
    table = known()
    out = []
    for name, value in options.items():
        option = declared.get(name)
        if option is None:
            if not (name in table and table[name].hint):
                out.append(name)
        elif not option.honours(value):
            out.append(name)
    return out


def why_unread(engine: str, options: Mapping[str, Any]) -> str | None:
    """Why ``engine`` cannot serve a model with ``options``; None when it honours them all."""
    names = unread(engine, options)
    if not names:
        return None
    return "does not honour the model option " + "; ".join(_read_by(n, options[n]) for n in names)


def refusal(options: Mapping[str, Any], engines: Sequence[str]) -> InvalidRequest | None:
    """The error of a load whose candidate ``engines`` none honours every one of ``options``;
    None when one does."""
    engines = list(dict.fromkeys(engines))  # an engine may be a candidate on several devices
    missing = {e: unread(e, options) for e in engines}
    if not options or not engines or any(not names for names in missing.values()):
        return None
    names = sorted({n for names in missing.values() for n in names})
    return InvalidRequest(
        f"no engine this model can run on here ({', '.join(engines)}) reads its options as given: "
        + "; ".join(_read_by(n, options[n]) for n in names),
        param=f"options.{names[0]}",
        details={"options": {n: readers(n) for n in names}, "engines": engines},
    )


def _read_by(name: str, value: Any) -> str:
    engines = readers(name)
    return f"{name} = {value!r} (read by {', '.join(engines) or 'no engine'})"


def markdown() -> str:
    """The options table of docs/models.md: each option, the engines that read it, its tasks."""
    rows = ["| option | read by | tasks | what |", "| --- | --- | --- | --- |"]
    for name, option in known().items():
        tasks = ", ".join(sorted(option.tasks)) if option.tasks is not None else "any"
        hint = " A hint: an engine that does not read it serves without it." if option.hint else ""
        rows.append(f"| `{name}` | {', '.join(readers(name))} | {tasks} | {option.summary}.{hint} |")
    return "\n".join(rows)
