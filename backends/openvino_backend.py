"""The OpenVINO engine: continuously batched generation through OpenVINO GenAI's
``ContinuousBatchingPipeline`` and embeddings through a compiled OpenVINO model.

The snapshot's OpenVINO IR (exported once, weight formats) comes from ``openvino_export``.
Tokenization stays with the snapshot's Hugging Face tokenizer, so prompt ids are exactly the
ones the torch engine would use.

Nothing here imports openvino at module import time.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from hfd.backends import _hf, hardware, openvino_cpu
from hfd.backends.base import FinishReason, LoadOptions, SamplingParams, StepOutput, Task, TokenizedBatch
from hfd.backends.capabilities import (
    FREQUENCY_PENALTY,
    LOGPROBS,
    PRESENCE_PENALTY,
    PROMPT_LOGPROBS,
    REPETITION_PENALTY,
)
from hfd.backends.logprobs import ov_logprobs, ov_prompt_logprobs
from hfd.backends.numpy_encoder import EncoderHead, load_head, pool
from hfd.backends.openvino_export import IR_FILE, prepare_ir, resolve_weight_format
from hfd.backends.openvino_process import LocalPipeline, PipelineProcess, generation_config
from hfd.backends.proving import probe_compile
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)


class OpenVINOBackend:
    name = "openvino"
    tasks: frozenset[Task] = frozenset({"generate", "embed"})

    def available(self) -> tuple[bool, str]:
        probe = hardware.probe_openvino()
        return probe.installed, probe.reason

    def devices(self) -> list[str]:
        return [d.id for d in hardware.probe_openvino().devices]

    def load_encoder(self, opts: LoadOptions) -> OVEncoder:
        device = ov_device(opts.device)
        weight_format = resolve_weight_format(opts, device)
        start = time.perf_counter()
        model_dir, built = prepare_ir(opts, "embed", weight_format)
        head = load_head(opts.path, trust_remote_code=opts.trust_remote_code)
        properties = _compile_properties(opts, device)
        # The first compile of this graph with these properties on this CPU happens in a child
        # process: a native crash there fails this load instead of killing the daemon.
        probe_compile(
            model_dir / IR_FILE, device, properties, opts.cache_dir,
            static_length=head.max_length if device.startswith("NPU") else None, fault=_test_fault(opts),
        )  # fmt: skip
        encoder = OVEncoder(model_dir / IR_FILE, head, device, properties)
        encoder.weight_format = weight_format
        encoder.threads = int(properties.get("INFERENCE_NUM_THREADS", 0))
        log.info(
            "encoder loaded",
            extra={"engine": self.name, "model_path": str(opts.path), "device": device,
                   "weight_format": weight_format, "precision": encoder.precision, "threads": encoder.threads,
                   "exported": built, "seconds": round(time.perf_counter() - start, 3)},
        )  # fmt: skip
        return encoder

    def load_speech(self, opts: LoadOptions) -> Any:
        from hfd.backends import whisper_openvino  # Whisper on GenAI's WhisperPipeline

        return whisper_openvino.load(opts)

    def load_generator(self, opts: LoadOptions) -> OVGenerator:
        device = ov_device(opts.device)
        if device.startswith("NPU"):
            raise ModelUnavailable("OpenVINO continuous batching does not run on the NPU; use CPU or GPU")
        weight_format = resolve_weight_format(opts, device)
        start = time.perf_counter()
        model_dir, built = prepare_ir(opts, "generate", weight_format)
        properties = _compile_properties(opts, device)
        generator = OVGenerator(model_dir, opts, device, properties, fault=_test_fault(opts))
        generator.weight_format = weight_format
        generator.threads = int(properties.get("INFERENCE_NUM_THREADS", 0))
        log.info(
            "generator loaded",
            extra={"engine": self.name, "model_path": str(opts.path), "device": device,
                   "weight_format": weight_format, "precision": generator.precision,
                   "threads": generator.threads, "exported": built,
                   "kv_cache_bytes": generator.kv_cache_bytes, "context_length": generator.context_length,
                   "seconds": round(time.perf_counter() - start, 3)},
        )  # fmt: skip
        return generator


# -- options ------------------------------------------------------------------------------------


def ov_device(device: str) -> str:
    """hfd's device string to OpenVINO's ("cpu" -> "CPU", "gpu.1" -> "GPU.1"), checked against
    the devices OpenVINO sees here."""
    name = device.strip().upper() or "CPU"
    base = name.split(".")[0].split(":")[0]
    if base not in ("CPU", "GPU", "NPU", "AUTO", "HETERO", "MULTI"):
        raise InvalidRequest(f"the openvino engine does not run on {device!r}", param="device")
    probe = hardware.probe_openvino()
    if not probe.installed:
        raise ModelUnavailable(f"the openvino engine is not available: {probe.reason}")
    # Virtual devices pick among the real ones themselves; a bad index fails at compile time.
    if base in ("AUTO", "HETERO", "MULTI") or any(d.id.split(".")[0] == base for d in probe.devices):
        return name
    why = probe.unavailable.get(hardware.ov_device_kind(name), "not detected")
    raise ModelUnavailable(f"OpenVINO device {name} is not available: {why}", details={"device": name})


def _compile_properties(opts: LoadOptions, device: str) -> dict[str, Any]:
    """Compile properties: threads and precision hint. On the CPU both come from one rule
    (``openvino_cpu.plan``): bf16 compute never runs at one thread, where OpenVINO crashes."""
    try:
        hint = openvino_cpu.precision_hint(opts.dtype)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="dtype") from None
    props: dict[str, Any] = {}
    if device.startswith("CPU"):
        cpu = hardware.probe_cpu()
        ov_cpu = hardware.probe_openvino().first("cpu")
        caps = (ov_cpu.capability or "").split(",") if ov_cpu is not None else []
        cpu_plan = openvino_cpu.plan(opts.threads, opts.dtype, cpu.usable_cores, cpu.features, caps)
        if cpu_plan.note:
            log.warning(
                "openvino cpu plan changed", extra={"model_path": str(opts.path), "note": cpu_plan.note,
                                                    "threads": cpu_plan.threads, "precision": cpu_plan.precision},
            )  # fmt: skip
        if cpu_plan.threads > 0:
            props["INFERENCE_NUM_THREADS"] = int(cpu_plan.threads)
        hint = cpu_plan.hint
    if hint is not None:
        props["INFERENCE_PRECISION_HINT"] = hint
    return props


def _test_fault(opts: LoadOptions) -> str | None:
    """A fault to inject, for tests only: the model option ``test_fault`` ("warmup" kills the
    engine process during its warm-up, "probe" the encoder's compile probe), honoured only when
    the environment variable ``HFD_TEST_FAULTS=1`` is set too, so no model config can trigger
    it in a real daemon."""
    if os.environ.get("HFD_TEST_FAULTS") != "1":
        return None
    fault = opts.extra.get("test_fault")
    return str(fault) if fault else None


def _ir_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.glob("openvino_*model*.bin"))


# -- encoder ------------------------------------------------------------------------------------


class OVEncoder:
    """An ``EncoderModel`` over a compiled OpenVINO model that outputs token embeddings."""

    name = "openvino"
    weight_format = "fp32"
    threads = 0

    def __init__(self, xml: Path, head: EncoderHead, device: str, properties: dict[str, Any]) -> None:
        import openvino as ov

        self.device = device
        self._head = head
        self.max_length = head.max_length
        self.dimensions = head.dimensions
        self._xml = xml
        core = ov.Core()
        model = core.read_model(xml)
        self._inputs = [i.get_any_name() for i in model.inputs]
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids", "position_ids"}
        if unknown:
            raise ModelUnavailable(f"{xml}: unexpected encoder inputs {sorted(unknown)}")
        names = [o.get_any_name() for o in model.outputs]
        self._output = next((n for n in ("last_hidden_state", "token_embeddings") if n in names), names[0])
        # The NPU compiles static shapes only: one row of max_length tokens at a time.
        self._static = device.startswith("NPU")
        if self._static:
            model.reshape({name: [1, self.max_length] for name in self._inputs})
        props = {"PERFORMANCE_HINT": "LATENCY", **properties}
        try:
            self._compiled = core.compile_model(model, device, props)
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO cannot compile {xml} for {device}: {exc}") from exc
        self._request = self._compiled.create_infer_request()
        try:  # what the plugin computes in: OpenVINO's default for this CPU unless hinted
            self.precision = openvino_cpu.precision_name(
                self._compiled.get_property("INFERENCE_PRECISION_HINT")
            )
        except Exception:
            self.precision = "unknown"

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        return self._head.tokenize(texts)

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        if not batch.ids:
            return self._head.empty()
        if self._static:
            rows = [self._run(*self._head.pad(TokenizedBatch([ids]), self.max_length)) for ids in batch.ids]
            return np.concatenate(rows, axis=0)
        return self._run(*self._head.pad(batch))

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        inputs: dict[str, np.ndarray] = {}
        for name in self._inputs:
            if name == "token_type_ids":
                inputs[name] = np.zeros_like(ids)
            elif name == "position_ids":
                inputs[name] = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
            else:
                inputs[name] = feeds[name]
        self._request.infer(inputs)
        hidden = self._request.get_tensor(self._output).data
        return pool(hidden, mask, self._head.pooling)

    def memory_bytes(self) -> int:
        return _ir_bytes(self._xml.parent)

    def close(self) -> None:
        self._request = None
        self._compiled = None


# -- generator ----------------------------------------------------------------------------------


def kv_token_bytes(config: dict[str, Any]) -> int:
    """KV cache bytes per token (K and V, every layer) at two bytes per element."""
    text = config.get("text_config") or config
    layers = int(text.get("num_hidden_layers") or 0)
    heads = int(text.get("num_attention_heads") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (int(text.get("hidden_size") or 0) // max(heads, 1)))
    return 2 * layers * kv_heads * head_dim * 2


def kv_cache_target(opts: LoadOptions, config: dict[str, Any], context_length: int) -> int:
    """Bytes the pipeline's KV cache may take.

    The model option ``kv_cache_gb`` wins; else what the model manager reserved for the KV cache
    (``extra["kv_cache_bytes"]``); else enough for ``max_running`` sequences of up to 4096
    tokens (or the context, if shorter), at most a quarter of the available memory. A fixed size
    (rather than GenAI's grow-on-demand) keeps the model within its memory reservation, and
    prefix caching, which keeps blocks until the cache is full, needs a bound.
    """
    if opts.extra.get("kv_cache_gb"):
        return int(float(opts.extra["kv_cache_gb"]) * 1024**3)
    if opts.extra.get("kv_cache_bytes"):
        return int(opts.extra["kv_cache_bytes"])
    wanted = kv_token_bytes(config) * opts.max_running * min(context_length, 4096)
    ceiling = hardware.probe_memory().available_bytes // 4
    return min(wanted, ceiling) if ceiling > 0 else wanted


def kv_block_tokens(device: str) -> int:
    """Tokens per KV block in GenAI's paged cache: 32 on the CPU, 16 on GPUs."""
    return 32 if device.startswith("CPU") else 16


def kv_cache_blocks(target: int, token_bytes: int, device: str, context_length: int, max_running: int) -> int:
    """``target`` bytes as KV blocks, never fewer than one full-context sequence plus a block for
    every other running one: a prompt that cannot fit the cache at all would be dropped."""
    block = kv_block_tokens(device)
    floor = -(-context_length // block) + max(0, max_running - 1)
    return max(floor, target // max(1, token_bytes * block))


class OVGenerator(_hf.PromptTokens):
    """A ``GenerationModel`` over ``openvino_genai.ContinuousBatchingPipeline``.

    The pipeline schedules by itself and runs in a child process (``openvino_process``: its
    ``step()`` keeps the GIL) that steps on its own while it has work; each ``step()`` here
    returns what every step finished since the last call produced (waiting for one, unless
    ``interrupt()`` is called). Tokenisation, validation and decoding stay in the daemon's
    process. Sequence ids double as the pipeline's request ids.
    """

    name = "openvino"
    # GenAI has the penalties and the chosen token's logprob (also the prompt's, with echo), but
    # no top logprobs and no logit_bias.
    capabilities = frozenset(
        {LOGPROBS, PROMPT_LOGPROBS, PRESENCE_PENALTY, FREQUENCY_PENALTY, REPETITION_PENALTY}
    )
    weight_format = "fp32"
    threads = 0

    def __init__(
        self,
        model_dir: Path,
        opts: LoadOptions,
        device: str,
        properties: dict[str, Any],
        fault: str | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.device = device
        self._model_dir = model_dir
        config = _hf.require_model_dir(opts.path)
        try:
            self._hf_tokenizer = AutoTokenizer.from_pretrained(
                opts.path, local_files_only=True, trust_remote_code=opts.trust_remote_code
            )
        except Exception as exc:
            raise ModelUnavailable(f"cannot load the tokenizer of {opts.path}: {exc}") from exc
        backend = getattr(self._hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelUnavailable(
                f"{opts.path} has no fast tokenizer (tokenizer.json); the openvino engine needs one"
            )
        from tokenizers import Tokenizer

        # A private Rust tokenizer, never re-configured: safe to call from several threads.
        self._tokenizer = Tokenizer.from_str(backend.to_str())
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        text = config.get("text_config") or config
        self.context_length = int(text.get("max_position_embeddings") or 0) or (
            int(self._hf_tokenizer.model_max_length) if self._hf_tokenizer.model_max_length < 10**7 else 2048
        )
        self._vocab = int(text.get("vocab_size") or 0)
        eos = _hf.eos_token_ids(opts.path, config)
        if self._hf_tokenizer.eos_token_id is not None:
            eos.add(int(self._hf_tokenizer.eos_token_id))
        self.eos_token_ids: frozenset[int] = frozenset(eos)

        max_num_seqs = max(1, opts.max_running)
        split_fuse = opts.flag("split_fuse", False)
        batched_tokens = max(opts.max_batched_tokens, 32)
        if not split_fuse:  # a whole prompt is prefilled in one step: the longest must fit
            batched_tokens = max(batched_tokens, self.context_length)
        scheduler: dict[str, Any] = {
            "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": batched_tokens,
            "enable_prefix_caching": opts.flag("prefix_caching", True),
            # Off: a step either prefills newcomers or decodes the running sequences, and
            # newcomers go first, so a short request arriving during long generations gets its
            # first token after its own prefill rather than inside a step shared with every
            # decode (GenAI's default, split-fuse, doubled that time to first token here).
            "dynamic_split_fuse": split_fuse,
        }
        token_bytes = kv_token_bytes(config)
        target = kv_cache_target(opts, config, self.context_length)
        if token_bytes > 0:
            blocks = kv_cache_blocks(target, token_bytes, device, self.context_length, max_num_seqs)
            scheduler["num_kv_blocks"] = blocks
            self.kv_cache_bytes = blocks * token_bytes * kv_block_tokens(device)
        else:  # a config we cannot read the attention shape from: whole GB, as GenAI takes it
            scheduler["cache_size"] = max(1, -(-target // 1024**3))
            self.kv_cache_bytes = scheduler["cache_size"] * 1024**3
        # The pipeline runs in a child process: its step() keeps the GIL (see openvino_process).
        where = PipelineProcess if opts.flag("pipeline_process", True) else LocalPipeline
        self._pipeline: PipelineProcess | LocalPipeline | None = where(
            model_dir, device, properties, scheduler, fault
        )
        # What the device computes in, as the engine process found it (hint or plugin default).
        self.precision = self._pipeline.precision or "unknown"
        self._live: set[int] = set()
        self._prompts: dict[int, list[int]] = {}  # echo requests' prompts, until their first output

    # Thread-safe: the Rust tokenizer is only read; chat templates render with no shared state.
    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode([int(t) for t in token_ids], skip_special_tokens=True))

    # Any thread: the service compiles before the request is added (backends.grammar_openvino).
    def compile_constraint(self, spec: Any) -> Any:
        from hfd.backends.grammar_openvino import compile_for_openvino

        vocab = self._vocab or len(self._hf_tokenizer)
        return compile_for_openvino(
            self, self._hf_tokenizer, vocab_size=vocab, stop_token_ids=self.eos_token_ids, spec=spec
        )

    # Worker thread only from here on.
    def add(self, seq_id: int, prompt_ids: Sequence[int], params: SamplingParams) -> None:
        if seq_id in self._live:
            raise InvalidRequest(f"sequence {seq_id} is already running")
        ids = [int(t) for t in prompt_ids]
        if not ids:
            raise InvalidRequest("the prompt is empty", param="prompt")
        if self._vocab and any(not 0 <= t < self._vocab for t in ids):
            raise InvalidRequest(f"prompt token ids must be in [0, {self._vocab})", param="prompt")
        room = self.context_length - len(ids)
        if room <= 0:
            raise ContextLengthExceeded(
                f"the prompt has {len(ids)} tokens; this model's context is {self.context_length}",
                param="prompt",
            )
        self._process().add(seq_id, ids, self._generation_config(params, min(params.max_tokens, room)))
        self._live.add(seq_id)
        if params.prompt_logprobs is not None:
            self._prompts[seq_id] = ids

    def refuses(self, params: SamplingParams) -> tuple[str, str] | None:
        """What of ``params`` GenAI would silently ignore although it is in ``capabilities``:
        its penalties apply only when sampling, not to greedy decoding."""
        if params.greedy:
            for name in ("presence_penalty", "frequency_penalty", "repetition_penalty"):
                if getattr(params, name) != (1.0 if name == "repetition_penalty" else 0.0):
                    return f"{name} with temperature 0 (greedy decoding)", name
        return None

    def _generation_config(self, params: SamplingParams, max_new: int) -> dict[str, Any]:
        """``openvino_genai.GenerationConfig`` fields, validated here (the engine process only
        reports failures after the fact) and sent to the engine process as a plain dict."""
        max_new_tokens = max(1, max_new)
        config: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": min(max(0, params.min_tokens), max_new_tokens),
            "ignore_eos": params.ignore_eos,
        }
        if self.eos_token_ids:
            config["eos_token_id"] = min(self.eos_token_ids)
            config["stop_token_ids"] = sorted(self.eos_token_ids)
        if params.greedy:
            config["do_sample"] = False
        else:
            config["do_sample"] = True
            config["temperature"] = float(params.temperature)
            config["top_p"] = float(params.top_p)
            # GenAI's default seed is fixed: unseeded requests would all sample alike.
            config["rng_seed"] = (
                int(params.seed) if params.seed is not None else int.from_bytes(os.urandom(4), "little")
            )
        if params.logprobs is not None or params.prompt_logprobs is not None:
            config["logprobs"] = 1  # GenAI reports the chosen token's logprob only (no top ones)
            config["echo"] = params.prompt_logprobs is not None
        # GenAI's sampler has OpenAI's presence/frequency penalties and HF's repetition penalty
        # (applied only when sampling: ``refuses`` turns greedy requests with them away).
        if params.presence_penalty:
            config["presence_penalty"] = float(params.presence_penalty)
        if params.frequency_penalty:
            config["frequency_penalty"] = float(params.frequency_penalty)
        if params.repetition_penalty != 1.0:
            config["repetition_penalty"] = float(params.repetition_penalty)
        if params.constraint is not None:  # an OpenVINOConstraint from compile_constraint
            config["structured_output"] = dict(params.constraint.fields)
        try:
            generation_config(config).validate()
        except Exception as exc:
            raise InvalidRequest(f"invalid sampling parameters: {exc}") from exc
        return config

    def _process(self) -> PipelineProcess | LocalPipeline:
        if self._pipeline is None:
            raise ModelUnavailable("this OpenVINO model was closed")
        return self._pipeline

    def cancel(self, seq_id: int) -> None:
        self._prompts.pop(seq_id, None)
        if seq_id in self._live:
            self._live.discard(seq_id)
            self._process().cancel(seq_id)  # frees its KV blocks at the next step

    @property
    def alive(self) -> bool:
        """False when the engine process has died: the model manager then loads it again."""
        return self._pipeline is not None and self._pipeline.alive

    def interrupt(self) -> None:
        """Wake a waiting ``step()`` (any thread): a newcomer is then added while the pipeline
        computes its current step, and joins the next one."""
        pipeline = self._pipeline
        if pipeline is not None:
            pipeline.interrupt()

    def step(self) -> list[StepOutput]:
        if not self._live:
            return []
        outputs: list[StepOutput] = []
        for seq_id, tokens, finished, lps, prompt in self._process().step():
            if seq_id not in self._live:
                continue  # cancelled: the engine process ran ahead of the cancel
            if finished is not None:
                self._live.discard(seq_id)
            outputs.append(
                StepOutput(
                    seq_id=seq_id,
                    token_ids=tokens,
                    finished=cast(FinishReason | None, finished),
                    logprobs=ov_logprobs(tokens, lps),
                    prompt_logprobs=ov_prompt_logprobs(self._prompts.pop(seq_id, None), prompt),
                )
            )
        return outputs

    def has_work(self) -> bool:
        return bool(self._live)

    def allocated_kv_bytes(self) -> int:
        """What GenAI has allocated for the KV cache so far (it allocates on first use, with its
        own element and block sizes; 0 before the first step), as of the last step."""
        return self._pipeline.kv_cache_bytes if self._pipeline is not None else 0

    def memory_bytes(self) -> int:
        """The IR and the KV cache, or the engine process's resident memory when that is more
        (it also holds the OpenVINO runtime and the compiled model's buffers)."""
        model = _ir_bytes(self._model_dir) + max(self.kv_cache_bytes, self.allocated_kv_bytes())
        pipeline = self._pipeline
        return max(model, pipeline.rss_bytes() if pipeline is not None else 0)

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        self._live.clear()
        if pipeline is not None:
            pipeline.close()
