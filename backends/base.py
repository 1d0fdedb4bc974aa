"""What an engine must offer, as typing Protocols, and the plain data that crosses the seam.

Two kinds of loaded model:

- ``EncoderModel`` (embeddings now; classification and rerank later): tokenize on any thread,
  then run a padded batch on the model's worker thread.
- ``GenerationModel``: step-wise generation. The daemon's continuous-batching scheduler
  (``hfd.daemon.scheduler.generation``) calls ``add``/``cancel`` between steps and ``step``
  in a loop on the model's worker thread. An engine with its own continuous batching
  (OpenVINO GenAI's ContinuousBatchingPipeline) implements the same three calls over it; an
  engine without one (torch) implements them over its own batched KV cache.

All calls on one loaded model are made from one worker thread, except ``tokenize``,
``encode_prompt``, ``apply_chat_template`` and ``decode``, which must be thread-safe (the
daemon tokenizes the next batch while the current one computes).

Two optional members, for engines that compute in another process (OpenVINO generation), each
declared as a Protocol of its own below with its default for engines that lack it:
``Interruptible.interrupt()``, callable from any thread, makes a waiting ``step()`` return
early so a newcomer can be added at once (default: none; a newcomer waits for the step to
finish); ``Supervised.alive`` (a property) turns False when that process has died, and the
model manager then loads the model again on its next request (default: always alive). Read
them with ``interrupter(model)`` and ``is_alive(model)``, never by attribute name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from hfd.backends.logprobs import TokenLogprob

# A task family's name ("generate", "embed", "rerank", "classify", ...): the task registry
# (hfd.daemon.tasks.registry) lists them; engines declare the engine-level tasks they run.
Task = str
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class LoadOptions:
    """How to load one model. Built by the model manager from the model's config."""

    path: Path  # a local snapshot directory in Hugging Face layout (config.json, weights, tokenizer)
    task: Task
    device: str = "cpu"  # "cpu", "cuda:0", "mps", "GPU", "NPU" ...
    threads: int = 0  # 0: the engine's default for the device
    dtype: str | None = None  # "float32", "float16", "bfloat16"; None: the engine's default
    weight_format: str | None = None  # OpenVINO: "fp32" | "fp16" | "int8"
    trust_remote_code: bool = False
    max_running: int = 32  # generation: most sequences in one decoding step
    max_batched_tokens: int = 4096  # generation: most prompt tokens prefilled in one step
    # Generation: the shortest time between two outputs of one sequence that an engine pacing its
    # own output (``paces_stream``) keeps; 0: an output per step.
    stream_interval_ms: float = 0.0
    cache_dir: Path | None = None  # where derived artifacts (exports) live
    extra: dict[str, Any] = field(default_factory=dict)

    def flag(self, name: str, default: bool) -> bool:
        """A boolean engine option from ``extra``, also when it was written as text ("false")."""
        value = self.extra.get(name, default)
        if isinstance(value, str):
            return value.strip().lower() not in ("0", "false", "no", "off", "")
        return bool(value)


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    # Stop strings are matched by the scheduler on decoded text, not by engines.
    stop: tuple[str, ...] = ()
    # The compiled constraint from ``Constrainable.compile_constraint`` (None: unconstrained).
    # Contract: it has a ``matcher()`` method returning a fresh ``TokenMatcher``
    # (``backends.constraints``); the engine calls it once per sequence in ``add``, so sequences
    # sharing one compiled constraint each keep their own position in it.
    constraint: Any = None
    # Log-probabilities (backends.logprobs): None asks for none; k >= 0 asks for the chosen
    # token's and the k most likely ones', per generated token (``logprobs``) and per prompt
    # token (``prompt_logprobs``, completions' echo). Engines declare them in ``capabilities``.
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    # OpenAI's penalties (on the generated tokens' counts), HF/vLLM's repetition penalty (on
    # every token seen, prompt included) and per-token logit biases ((token id, bias), ...).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(frozen=True)
class TokenizedBatch:
    """Token ids of several texts, unpadded. Engines pad as they need."""

    ids: list[list[int]]
    # Segment ids per token (BERT's token_type_ids) for text pairs; None: all zero.
    type_ids: list[list[int]] | None = None

    @property
    def lengths(self) -> list[int]:
        return [len(x) for x in self.ids]


@dataclass
class StepOutput:
    """What one decoding step produced for one sequence."""

    seq_id: int
    token_ids: list[int]  # usually one; an engine may emit several (speculative, multi-step)
    finished: FinishReason | None = None  # set on the sequence's last output (eos: "stop")
    # When the sequence asked (SamplingParams.logprobs): one entry per token of token_ids.
    logprobs: list[TokenLogprob] | None = None
    # On its first output, when it asked (prompt_logprobs): one per prompt token, the first None.
    prompt_logprobs: list[TokenLogprob | None] | None = None


@runtime_checkable
class EncoderModel(Protocol):
    name: str  # the engine's name: "torch", "openvino", "onnxruntime"
    device: str
    max_length: int  # most tokens per input, after which inputs are truncated
    dimensions: int

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        """Thread-safe. Truncates each text to ``max_length`` tokens (special tokens included)."""
        ...

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        """Pooled (and normalised when the model says so) float32 array, shape (n, dimensions)."""
        ...

    def memory_bytes(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class GenerationModel(Protocol):
    name: str
    device: str
    context_length: int  # prompt + generated tokens may not exceed this
    eos_token_ids: frozenset[int]

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        """Thread-safe. The prompt ids for a chat, with the generation prompt appended.
        ``tools`` (OpenAI function tools) go to the template as transformers passes them; the
        messages are in Hugging Face's form (``hfd.daemon.tools.render``). An engine with a
        template may also expose its source as ``chat_template`` (read with ``getattr``), from
        which the daemon tells whether it renders tools and which parser reads its calls."""
        ...

    def encode_prompt(self, text: str) -> list[int]:
        """Thread-safe. Prompt ids for a plain completion (the tokenizer's BOS rules apply)."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Thread-safe. Text of ids, special tokens skipped."""
        ...

    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        """Queue a sequence; it joins the running batch at the next ``step``."""
        ...

    def cancel(self, seq_id: int) -> None:
        """Drop a sequence (finished by a stop string, cancelled, or disconnected). It frees
        its slot and cache at once and produces no more output. Unknown ids are ignored."""
        ...

    def step(self) -> list[StepOutput]:
        """Run one step: prefill sequences that joined, decode one token for every running
        one. Returns the tokens produced; a sequence whose output has ``finished`` set is
        gone from the engine afterwards. An engine that computes elsewhere (OpenVINO's pipeline
        runs in its own process) may return every step it finished since the last call, and an
        empty list when ``interrupt()`` woke it before any step finished."""
        ...

    def has_work(self) -> bool: ...

    def memory_bytes(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class Interruptible(Protocol):
    """A model whose ``step()`` can be woken early (see the module's doc)."""

    def interrupt(self) -> None:
        """Thread-safe. Make a ``step()`` that waits return soon, possibly with no outputs."""
        ...


@runtime_checkable
class Supervised(Protocol):
    """A model that computes in another process, which can die on its own."""

    @property
    def alive(self) -> bool:
        """False once the process is gone; the model must then be loaded again."""
        ...


def interrupter(model: object) -> Callable[[], None] | None:
    """The model's ``interrupt``, or None for a model whose steps cannot be woken."""
    return model.interrupt if isinstance(model, Interruptible) else None


def paces_stream(model: object) -> bool:
    """Whether the model spaces each sequence's outputs by ``LoadOptions.stream_interval_ms``
    itself (OpenVINO's engine process does: the daemon then wakes once per interval rather than
    once per token); the scheduler passes such a model's outputs on as they come."""
    return bool(getattr(model, "paces_stream", False))


def is_alive(model: object) -> bool:
    """Whether the model can still compute; a model not in another process always can."""
    return model.alive if isinstance(model, Supervised) else True


class Backend(Protocol):
    """An engine: knows whether it can run here, and loads models for a task."""

    name: str
    tasks: frozenset[Task]

    def available(self) -> tuple[bool, str]:
        """(usable, why not). Must not raise when the engine's library or driver is missing."""
        ...

    def devices(self) -> list[str]: ...

    def load_encoder(self, opts: LoadOptions) -> EncoderModel: ...

    def load_generator(self, opts: LoadOptions) -> GenerationModel: ...


def estimate_weights_bytes(path: Path) -> int:
    """Bytes of the weight files of a snapshot: a cheap lower bound of a model's memory."""
    total = 0
    for pattern in ("*.safetensors", "*.bin", "*.onnx", "*.xml"):
        for f in path.glob(pattern):
            total += f.stat().st_size
    return total
