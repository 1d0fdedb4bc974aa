"""The engine order measured on this machine, remembered across restarts.

The policy's order (``hfd.backends.policy``) comes from figures measured on one box per CPU
class; on another CPU (AVX-512, AMX) or for another model size or family the ranking may
differ. So for a model with more than one candidate engine on its device, each candidate is
loaded here (through the loader's own start-up: the same options, thread rule, export and
memory reservation as a real load), timed on a short fixed workload typical of its task, and
closed again:

- embeddings: one short text, then a full batch (``encoder_max_batch``) of short texts;
  the figure is texts/s;
- text generation: a short prompt and ``GEN_TOKENS`` greedy tokens, one stream, then
  ``GEN_STREAMS`` streams at once; the figure is generated tokens/s.

Each workload runs once untimed first (compiles, caches), then its best of ``REPEATS`` runs
counts; an engine's score is the geometric mean of its workloads' rates, so batch 1 and a full
batch weigh alike. An engine that fails to load or run is listed with its error and ranked last;
the static order's first engine keeps its place unless another beats it by more than ``MARGIN``.

The ranking and its figures go to ``<state_dir>/engine-choice.json`` (written atomically),
keyed by the snapshot (its resolved path, which names the commit, and its files' sizes and
times), the task, the model's options and weight format (dtype, kv_cache_gb, a draft model...:
two ``[[models]]`` entries on one snapshot are ranked apart), each candidate's engine, device,
version and threads, the CPU (model name and vector extensions: avx2, avx512*, amx*) and
``REVISION``: a restart reuses it, another machine, an upgraded engine, other options or other
threads measure again. Deleting the file is always safe.

A ranking is stored only when every failure in it was the engine's own: a candidate that could
not be given memory, was cancelled or hit a passing error (:func:`passing`) is no verdict on the
engine, so nothing is stored and the next pull or preload measures again.

It runs at ``hfd pull`` after the pull's export (``export_on_pull``), at preload, and on demand
(``hfd tune MODEL``, ``POST /api/tune``), never in a request's load: a cold first load uses the
cached ranking when there is one, else the static order. The loader puts the measured order
ahead of the static one (:func:`ordered`); pins and the engines remembered as crashing
(``engine_memory``) still win. ``measure_engines = false`` turns all of it off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from hfd.backends import families
from hfd.backends.base import EncoderModel, GenerationModel, LoadOptions, SamplingParams, Task
from hfd.backends.formats import file_stats
from hfd.client.errors import Cancelled, HfdError, InsufficientMemory, Timeout
from hfd.daemon.models.engine_memory import EngineMemory, engine_version, machine
from hfd.daemon.models.threads import engine_threads
from hfd.daemon.tasks import registry as task_registry

if TYPE_CHECKING:
    from hfd.daemon.models.loading import Loader
    from hfd.daemon.settings import ModelSpec

log = logging.getLogger(__name__)

FILE_NAME: Final = "engine-choice.json"
# Bump when the workload or an engine's default changes: older rankings are measured again
# (2: int8 weights' activation groups on the AVX-512 VNNI class, openvino_cpu.activation_group).
REVISION: Final = 2
# A measured winner must beat the static order's first engine by more than this share of its
# score to go first (two runs on the loaded 2-core box differed by up to a third).
MARGIN: Final = 0.10
MEASURED_TASKS: Final = ("embed", "generate")  # the tasks with a workload here
REPEATS: Final = 3
GEN_PROMPT: Final = "Once upon a time, in a small village by the sea,"
GEN_TOKENS: Final = 16
GEN_STREAMS: Final = 4
TEXTS: Final = (
    "The quick brown fox jumps over the lazy dog.",
    "A short sentence to embed.",
    "Models are measured on the machine that serves them.",
    "How fast is this engine here?",
)
MEASURED: Final = "measured on this machine"
STATIC: Final = "static order"

Candidate = tuple[str, str, str]  # (engine, device, why), as the loader orders them


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one measurement of a model covers, and the key its ranking is stored under."""

    task: Task
    device: str
    engines: tuple[str, ...]  # the candidates on ``device``, in the static order
    threads: dict[str, int]
    key: str


def choice_key(
    path: Path,
    task: str,
    engines: Sequence[tuple[str, str, int]],
    options: Mapping[str, Any],
    weight_format: str | None,
    cpu: dict[str, Any] | None = None,
) -> str:
    """The key of a ranking: the snapshot, the task, the model's asked options and weight
    format (as the crash records' ``record_key`` keys its dtype), each (engine, device, threads)
    with the engine's version, the CPU and the workload's revision."""
    data = {
        "model": {"path": str(path.resolve()), "files": file_stats(path)},
        "task": task,
        "options": dict(options),
        "weight_format": weight_format,
        "engines": [
            {"engine": e, "device": d.lower(), "threads": t, "version": engine_version(e)}
            for e, d, t in engines
        ],
        "machine": cpu if cpu is not None else machine(),
        "revision": REVISION,
    }
    # default=str: an option value JSON cannot hold (a path) still keys by its text
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


class EngineChoices:
    """The rankings file (the engine records file of ``engine_memory``, under its own name),
    and the lock that keeps measurements one at a time: two at once would time each other."""

    def __init__(self, state_dir: Path | None) -> None:
        self._records = EngineMemory(state_dir, FILE_NAME)
        self.lock = anyio.Lock()

    def get(self, key: str) -> dict[str, Any] | None:
        return self._records.get(key)

    def put(self, key: str, record: dict[str, Any]) -> None:
        self._records.put(key, record)

    def records(self) -> list[dict[str, Any]]:
        return self._records.records()


def rate(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def describe(record: dict[str, Any]) -> str:
    """The ranking in words: "measured on this machine: openvino 212 tok/s, torch 98 tok/s"."""
    parts = []
    for f in record.get("figures", []):
        score = f.get("score")
        parts.append(
            f"{f['engine']} {rate(score)} {record.get('unit', '')}" if score else f"{f['engine']} failed"
        )
    return f"{MEASURED}: " + ", ".join(parts)


def plan(loader: Loader, spec: ModelSpec, path: Path, task: Task, kept: Sequence[Candidate]) -> Plan | None:
    """The measurement ``kept`` (the loader's static order) calls for; None when there is
    nothing to choose: a task with no workload here, or fewer than two candidate engines on
    the first candidate's device. Blocks (reads the snapshot's file list)."""
    if task not in MEASURED_TASKS or not kept:
        return None
    device = kept[0][1]
    from hfd.daemon.models.loading import asked_options, untried  # loading imports this module

    family = families.model_type(path)
    asked = asked_options(spec, path)  # an engine the load skips untried is not measured either
    engines = tuple(e for e, d, _ in kept if d == device and untried(e, task, family, asked) is None)
    if len(engines) < 2:
        return None
    threads = {e: engine_threads(loader.settings, spec, e, device) for e in engines}
    key = choice_key(path, task, [(e, device, threads[e]) for e in engines], asked, spec.weight_format)
    return Plan(task, device, engines, threads, key)


def ordered(
    loader: Loader, spec: ModelSpec, path: Path, task: Task, kept: list[Candidate]
) -> list[Candidate]:
    """``kept`` with the measured ranking ahead of the static order, each reason saying which
    one it came from; a pinned load (one candidate) keeps ``kept`` as it is, and with
    ``measure_engines = false`` the order is the static one. Blocks (reads the file list)."""
    if len(kept) < 2:  # pinned, or one engine: nothing was chosen
        return kept
    static = [(e, d, f"{STATIC}: {why}") for e, d, why in kept]
    p = plan(loader, spec, path, task, kept) if loader.settings.measure_engines else None
    record = loader.engine_choices.get(p.key) if p is not None else None
    ranking = [e for e in record.get("ranking", []) if e in p.engines] if p and record else []
    if not ranking or p is None or record is None:
        return static
    summary = describe(record)
    rest = [c for c in static if not (c[1] == p.device and c[0] in ranking)]
    _say_if_not_static(spec.public_name, ranking[0], kept[0][0], summary)
    return [(e, p.device, summary) for e in ranking] + rest


def rank(figures: list[dict[str, Any]], static_first: str) -> list[dict[str, Any]]:
    """``figures`` fastest first, failed ones last; the static order's first engine stays first
    unless another beats it by more than ``MARGIN``: a near tie is noise, and then the policy's
    measured-on-purpose order is the better guess."""
    ranked = sorted(figures, key=lambda f: -(f.get("score") or 0.0))
    static = next((f for f in ranked if f["engine"] == static_first and f.get("score")), None)
    if ranked and static is not None and static["score"] >= (1.0 - MARGIN) * ranked[0]["score"]:
        ranked.remove(static)
        ranked.insert(0, static)
    return ranked


def _say_if_not_static(name: str, winner: str, static_first: str, why: str) -> None:
    """Never silently other than the policy: a measured winner that is not its first is logged."""
    if winner != static_first:
        log.warning(
            "measured engine order differs from the static order",
            extra={"model": name, "engine": winner, "static_first": static_first, "why": why},
        )


async def measure(loader: Loader, spec: ModelSpec, path: Path, *, force: bool = False) -> dict[str, Any]:
    """Measure the candidate engines of ``spec`` (at ``path``) and store their ranking, unless
    one for this key is stored already (``force``: measure again) or a candidate failed for a
    passing reason (``stored: false``). Returns ``{"measured": bool, ...}``: the record, or why
    nothing was measured."""
    name = spec.public_name
    task = task_registry.task_for(spec.task, path, name)
    kept = await anyio.to_thread.run_sync(loader.candidates, task, spec)
    p = await anyio.to_thread.run_sync(plan, loader, spec, path, task, kept)
    if p is None:
        why = (
            f"only {', '.join(MEASURED_TASKS)} models are measured"
            if task not in MEASURED_TASKS
            else "one candidate engine on its device (or a pinned engine or device)"
        )
        return {"measured": False, "model": name, "reason": why}
    async with loader.engine_choices.lock:
        cached = loader.engine_choices.get(p.key)
        if cached is not None and not force:
            log.info("engine order already measured here", extra={"model": name, "why": describe(cached)})
            return {"measured": False, "cached": True, **cached}
        figures = [await _measure_one(loader, spec, path, p, engine) for engine in p.engines]
    ranked = rank(figures, kept[0][0])
    ranking = [f["engine"] for f in ranked if f.get("score")]
    record: dict[str, Any] = {
        "model": name, "task": task, "device": p.device, "unit": _unit(task),
        "ranking": ranking, "figures": ranked,
        "static_first": kept[0][0], "threads": p.threads,
        "versions": {e: engine_version(e) for e in p.engines}, "machine": machine(),
        "revision": REVISION, "at": round(time.time(), 3),
    }  # fmt: skip
    loader.counters["engine_measurements"] += 1
    if any(f.get("passing") for f in ranked):  # no verdict on that engine: measure again next time
        log.warning("engine order measured but not stored", extra={"model": name, "why": describe(record)})
        return {"measured": True, "stored": False, **record}
    loader.engine_choices.put(p.key, record)
    log.info("engine order measured", extra={"model": name, "why": describe(record)})
    if ranking:
        _say_if_not_static(name, ranking[0], kept[0][0], describe(record))
    return {"measured": True, "stored": True, **record}


def passing(exc: BaseException) -> bool:
    """Whether ``exc`` says nothing about the engine on this model: no memory for it now, a
    cancellation or a timeout, or an error that asks to be retried (``retry_after``)."""
    if isinstance(exc, MemoryError | InsufficientMemory | Cancelled | Timeout):
        return True
    return isinstance(exc, HfdError) and exc.retry_after is not None


async def _measure_one(loader: Loader, spec: ModelSpec, path: Path, p: Plan, engine: str) -> dict[str, Any]:
    """One candidate loaded, timed and closed; its memory reserved meanwhile as a load's is."""
    name = spec.public_name
    figure: dict[str, Any] = {"engine": engine, "device": p.device, "threads": p.threads[engine]}
    key = await anyio.to_thread.run_sync(loader._record_key, spec, path, p.task, engine, p.device)
    if loader.engine_memory.get(key) is not None:  # as a load would, skip it
        return {**figure, "score": None, "error": "remembered as crashing on this model here"}
    opts = loader.options(spec, path, p.task, p.device, engine)
    estimate = await anyio.to_thread.run_sync(loader.estimate, path, p.task, engine, opts)
    # Its own reservation and its own `hfd ps` row: a real load of the model may run meanwhile.
    hold = f"{name} (measuring {engine})"
    budgets = loader.residency.budgets
    try:
        await loader.residency.make_room(hold, budgets.pool(p.device), estimate.total, estimate)
    except HfdError as exc:  # no memory for it now: says nothing about the engine
        return {**figure, "score": None, "error": exc.message, "passing": True}
    opts = dataclasses.replace(opts, extra={**opts.extra, "kv_cache_bytes": estimate.kv_cache})
    try:
        with anyio.CancelScope(shield=True):  # a load in its thread cannot be interrupted
            timed = await anyio.to_thread.run_sync(_load_and_time, loader, hold, engine, p.task, opts)
        return {**figure, **timed}
    except Exception as exc:  # ranked last, with why (and measured again if it was passing)
        message = exc.message if isinstance(exc, HfdError) else f"{type(exc).__name__}: {exc}"
        log.warning("engine failed while measured", extra={"model": name, "engine": engine, "error": message})
        return {**figure, "score": None, "error": message, **({"passing": True} if passing(exc) else {})}
    finally:
        loader.phases.done(hold)
        budgets.release(hold)
        loader.residency.notify()


def _load_and_time(loader: Loader, name: str, engine: str, task: Task, opts: LoadOptions) -> dict[str, Any]:
    """In a worker thread: the load as a real one does it (export, then the engine), the workload;
    ``name`` is the measurement's own (its `hfd ps` row), not the model's."""
    from hfd.backends.openvino_process import spare_kept  # no engine library at import

    # The spare engine process is for the model's own load, which follows: not taken here, and
    # kept alive for the whole measurement, however long (openvino_process.spare_kept).
    with spare_kept():
        started = time.perf_counter()
        model = loader._start(name, engine, task, opts)  # the load's own start-up: export, load
        load_seconds = time.perf_counter() - started
        try:
            loader.phases.enter(name, "measuring", task=task, engine=engine, device=opts.device)
            if isinstance(model, GenerationModel) and task == "generate":
                rates = generation_rates(model, min(GEN_STREAMS, opts.max_running or GEN_STREAMS))
            elif isinstance(model, EncoderModel):
                rates = encoder_rates(model, loader.settings.encoder_max_batch)
            else:
                raise TypeError(f"{engine} loaded no {task} model")
        finally:
            model.close()
    score = math.exp(sum(math.log(r) for r in rates.values()) / len(rates))
    return {"score": round(score, 2), "rates": {k: round(v, 2) for k, v in rates.items()},
            "load_seconds": round(load_seconds, 3)}  # fmt: skip


def _best(run: Callable[[], int]) -> float:
    """Items per second of ``run`` (which returns how many it did): untimed once, then the best
    of ``REPEATS``."""
    run()
    best = math.inf
    for _ in range(REPEATS):
        started = time.perf_counter()
        done = run()
        best = min(best, (time.perf_counter() - started) / max(done, 1))
    return 1.0 / max(best, 1e-9)


def encoder_rates(model: EncoderModel, batch: int) -> dict[str, float]:
    """Texts per second at batch 1 and at a full batch of short texts."""
    full = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(max(batch, 1))]
    rates = {}
    for texts in ([TEXTS[0]], full):
        rates[f"batch {len(texts)}"] = _best(lambda t=texts: _embed(model, t))  # type: ignore[misc]
    return rates


def _embed(model: EncoderModel, texts: list[str]) -> int:
    model.embed(model.tokenize(texts))
    return len(texts)


def generation_rates(model: GenerationModel, streams: int) -> dict[str, float]:
    """Generated tokens per second, one stream and ``streams`` at once (greedy, ``GEN_TOKENS``
    each, eos ignored so every engine generates as many)."""
    ids = iter(range(1 << 30))
    params = SamplingParams(max_tokens=GEN_TOKENS, temperature=0.0, ignore_eos=True)

    def run(n: int) -> int:
        for i in range(n):
            model.add(next(ids), model.encode_prompt(f"{GEN_PROMPT} {i}"), params)
        tokens = 0
        while model.has_work():
            tokens += sum(len(out.token_ids) for out in model.step())
        return tokens

    return {"1 stream": _best(lambda: run(1)), f"{streams} streams": _best(lambda: run(streams))}


def _unit(task: str) -> str:
    return "tok/s" if task == "generate" else "texts/s"
