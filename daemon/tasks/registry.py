"""Task families by name: one record per task, read by the model manager, the service and the
model list.

A record says how a task is detected from a snapshot (``detect``, tried in the order of
:data:`RECORDS`; then ``pipeline_tags``), which scheduler serves it (``encoder``: dynamic
batching under a token budget; ``generation``: continuous batching), how the policy ranks
engines for it (``engine_task``: the engine registry's task whose measurements apply), which
engines can run it, and which ``Backend`` method loads it. Adding a task is its module and a
record here; the doors, the manager and access control read the records.

Detection order (deterministic; ``[[models]] task = ...`` overrides it):

1. the first record, in :data:`RECORDS` order, whose ``detect`` accepts the snapshot. These
   read the head in config.json's ``architectures``: ``*ForTokenClassification`` is
   token-classify; ``*ForSequenceClassification`` with one label (a cross-encoder, as
   sentence-transformers' CrossEncoder saves it) is rerank, with several labels classify;
   image-text-to-text heads (LLaVA, Qwen2-VL, ...) are vision-chat; text encoder-decoders
   (T5, BART, Marian: ``is_encoder_decoder`` or a known family) are seq2seq; other causal and
   conditional-generation heads are generate; a sentence-transformers folder
   (``modules.json``) is embed;
2. else the first record listing the README front matter's ``pipeline_tag``;
3. else embed (a bare encoder, ``*Model``: its pooled output is an embedding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from hfd.backends.base import Task
from hfd.client.errors import InvalidRequest, ModelUnavailable
from hfd.daemon.tasks.detect import Snapshot, read
from hfd.daemon.tasks.media import media_records
from hfd.daemon.tasks.seq2seq import seq2seq_record
from hfd.daemon.tasks.vision import VISION_CHAT

SchedulerKind = Literal["encoder", "generation", "media"]  # media: hfd.daemon.media_worker

_GENERATE_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration", "ForSeq2SeqLM")


@dataclass(frozen=True)
class TaskRecord:
    name: str
    summary: str  # one line for docs and errors
    scheduler: SchedulerKind
    engine_task: str  # the engine-level task the policy ranks engines by ("embed" | "generate")
    # Engines that can run it; None: every engine whose registry record runs ``engine_task``.
    engines: tuple[str, ...] | None
    detect: Callable[[Snapshot], bool]
    pipeline_tags: tuple[str, ...] = ()
    loader: str = "load_encoder"  # the Backend method that loads it

    def runs_on(self, engine: str) -> bool:
        return self.engines is None or engine in self.engines


def _token_classify(s: Snapshot) -> bool:
    return s.has_head("ForTokenClassification")


def _rerank(s: Snapshot) -> bool:
    return s.has_head("ForSequenceClassification") and (s.num_labels == 1 or s.pipeline_tag == "text-ranking")


def _classify(s: Snapshot) -> bool:
    return s.has_head("ForSequenceClassification")


def _generate(s: Snapshot) -> bool:
    return s.has_head(*_GENERATE_HEADS) or s.gguf_causal  # a GGUF repository without config.json


def _embed(s: Snapshot) -> bool:
    return bool(s.st_modules)


# Engines with a classification head: torch (hfd.backends.torch_encoder.load_head), ONNX
# Runtime (onnx_heads) and OpenVINO (openvino_heads), ranked by the policy as encoders.
TEXT_HEAD_ENGINES: Final = ("torch", "onnxruntime", "openvino")

_TEXT_HEAD_SUMMARIES: Final = {
    "token-classify": "token classification (NER, POS): entities with spans",
    "rerank": "cross-encoder relevance scores of (query, document) pairs",
    "classify": "sequence classification (sentiment, NLI, zero-shot with an NLI model)",
}


def _text_head(name: str, detect: Callable[[Snapshot], bool], *pipeline_tags: str) -> TaskRecord:
    """A task over an encoder with a classification head (hfd.daemon.tasks.text_heads)."""
    return TaskRecord(
        name, _TEXT_HEAD_SUMMARIES[name], "encoder", "embed", TEXT_HEAD_ENGINES, detect, pipeline_tags
    )


RECORDS: Final[tuple[TaskRecord, ...]] = (
    *media_records(TaskRecord),  # before generate: Whisper's head is a ForConditionalGeneration
    TaskRecord(**VISION_CHAT),  # so are the vision-language models' heads
    _text_head("token-classify", _token_classify, "token-classification"),
    _text_head("rerank", _rerank, "text-ranking"),
    _text_head("classify", _classify, "text-classification", "zero-shot-classification"),
    seq2seq_record(TaskRecord),  # before generate: T5's and BART's heads are ForConditionalGeneration
    # TaskRecord(name, summary, scheduler, engine_task, engines, detect, pipeline_tags, loader)
    TaskRecord("generate", "text generation with a causal language model", "generation", "generate", None,
               _generate, ("text-generation",), "load_generator"),
    TaskRecord("embed", "sentence embeddings", "encoder", "embed", None, _embed,
               ("sentence-similarity", "feature-extraction")),
)  # fmt: skip
TASKS: Final[dict[str, TaskRecord]] = {r.name: r for r in RECORDS}
FALLBACK: Final = "embed"


def names() -> list[str]:
    return [r.name for r in RECORDS]


def record(task: str) -> TaskRecord:
    """The record of ``task``; ``InvalidRequest`` naming the known tasks otherwise."""
    try:
        return TASKS[task]
    except KeyError:
        raise InvalidRequest(f"unknown task {task!r}; known: {', '.join(names())}", param="task") from None


def detect_snapshot(snapshot: Snapshot) -> Task:
    """The task of a snapshot's facts, in the order the module's doc gives."""
    for r in RECORDS:
        if r.detect(snapshot):
            return r.name
    if snapshot.pipeline_tag:
        for r in RECORDS:
            if snapshot.pipeline_tag in r.pipeline_tags:
                return r.name
    return FALLBACK


def detect_task(path: Path) -> Task:
    """The task of the model at ``path``; ``ModelUnavailable`` when it has no config.json."""
    snapshot = read(path)
    if not snapshot.has_config:
        raise ModelUnavailable("the model's files have no config.json; is it a model directory?")
    if snapshot.config_error is not None:
        raise ModelUnavailable(f"cannot read the model's config.json ({snapshot.config_error})")
    return detect_snapshot(snapshot)


def guess_task(path: Path) -> Task | None:
    """The task of a stored snapshot for listings; None when its files do not say (no readable
    config.json, or one naming no known head, no pipeline_tag and no bare encoder)."""
    snapshot = read(path)
    if not snapshot.has_config or snapshot.config_error is not None:
        return None
    task = detect_snapshot(snapshot)
    if task == FALLBACK and not (snapshot.st_modules or snapshot.pipeline_tag or snapshot.has_head("Model")):
        return None
    return task


def task_for(pinned: str | None, path: Path, model: str = "") -> Task:
    """A model's task: its ``[[models]] task`` pin (checked against the registry), else detected."""
    if pinned is not None:
        if pinned not in TASKS:
            raise InvalidRequest(f"model {model!r}: task must be one of {', '.join(names())}, not {pinned!r}")
        return pinned
    return detect_task(path)
