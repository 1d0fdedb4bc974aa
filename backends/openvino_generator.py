"""The OpenVINO engine's generator: a ``GenerationModel`` over OpenVINO GenAI's
``ContinuousBatchingPipeline``, which runs in an engine process of its own (``openvino_process``)
or, when a model asks, in this one (``openvino_engine.LocalPipeline``). The KV cache is sized by
``openvino_kv``.

Nothing here imports openvino at module import time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from hfd.backends import _hf, gguf, preload
from hfd.backends.base import FinishReason, LoadOptions, SamplingParams, StepOutput
from hfd.backends.capabilities import (
    FREQUENCY_PENALTY,
    LOGPROBS,
    PRESENCE_PENALTY,
    PROMPT_LOGPROBS,
    REPETITION_PENALTY,
)
from hfd.backends.logprobs import ov_logprobs, ov_prompt_logprobs
from hfd.backends.openvino_engine import LocalPipeline, generation_config, pipeline_init
from hfd.backends.openvino_export import ir_bytes
from hfd.backends.openvino_kv import size_kv_cache
from hfd.backends.openvino_process import PipelineProcess
from hfd.backends.openvino_speculative import DraftModel, export_draft, speculative_plan
from hfd.backends.tokenizer_facts import RecordedTokenizer, tokenizer_facts
from hfd.client.errors import ContextLengthExceeded, InvalidRequest, ModelUnavailable


def scheduler_fields(opts: LoadOptions, context_length: int) -> dict[str, Any]:
    """GenAI's ``SchedulerConfig`` fields for a model, before the KV cache is sized."""
    split_fuse = opts.flag("split_fuse", False)
    batched_tokens = max(opts.max_batched_tokens, 32)
    if not split_fuse:  # a whole prompt is prefilled in one step: the longest must fit
        batched_tokens = max(batched_tokens, context_length)
    return {
        "max_num_seqs": max(1, opts.max_running),
        "max_num_batched_tokens": batched_tokens,
        "enable_prefix_caching": opts.flag("prefix_caching", True),
        # Off: a step either prefills newcomers or decodes the running sequences, and newcomers
        # go first, so a short request arriving during long generations gets its first token
        # after its own prefill rather than inside a step shared with every decode (GenAI's
        # default, split-fuse, doubled that time to first token here).
        "dynamic_split_fuse": split_fuse,
    }


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
    activation_group: int | None = None  # DYNAMIC_QUANTIZATION_GROUP_SIZE when set (openvino_cpu)

    def __init__(
        self,
        model_dir: Path,
        opts: LoadOptions,
        device: str,
        properties: dict[str, Any],
        fault: str | None = None,
    ) -> None:
        self.device = device
        self._model_dir = model_dir
        served = model_dir if model_dir.suffix == gguf.SUFFIX else None  # GenAI reads the GGUF
        # A GGUF repository may have no config.json or tokenizer files: its metadata stands in.
        if served:
            preload.wait_for_transformers()  # which reads the GGUF's metadata
        config = gguf.model_config(opts.path, served) if served else _hf.require_model_dir(opts.path)
        self._path, self._trust_remote_code = opts.path, opts.trust_remote_code
        self._gguf_tokenizer = gguf.tokenizer_file(opts.path, served) if served else None
        self._transformers_tokenizer: Any = None  # xgrammar's, loaded at the first constraint
        self._transformers_lock = threading.Lock()
        # A private Rust tokenizer, never re-configured: safe to call from several threads.
        if served:  # transformers converts the GGUF's vocabulary
            self._hf_tokenizer, self._tokenizer = self._transformers_pair()
            self._transformers_tokenizer = self._hf_tokenizer
        else:  # what transformers reads of the tokenizer, recorded: later loads need no transformers
            facts = tokenizer_facts(
                opts.path, trust_remote_code=opts.trust_remote_code, cache_dir=opts.cache_dir, config=False,
                needed="the openvino engine needs one",
            )  # fmt: skip
            self._hf_tokenizer, self._tokenizer = RecordedTokenizer(facts), facts.rust_tokenizer()
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

        scheduler = scheduler_fields(opts, self.context_length)
        self.kv_cache_bytes = size_kv_cache(scheduler, opts, config, device, self.context_length)
        self.speculative = speculative_plan(opts)  # prompt lookup or a draft, when the model asks
        self._draft_dir: Path | None = None  # the draft's IR: its weights are held too
        if isinstance(self.speculative, DraftModel):  # exported like any model, on this device
            self._draft_dir = export_draft(opts, self.speculative, device)
            properties = self.speculative.properties(properties, str(self._draft_dir))
        elif self.speculative is not None:
            properties = self.speculative.properties(properties)
        # The pipeline runs in a child process: its step() keeps the GIL (see openvino_process).
        where = PipelineProcess if opts.flag("pipeline_process", True) else LocalPipeline
        self._pipeline: PipelineProcess | LocalPipeline | None = where(
            {**pipeline_init(model_dir, device, properties, scheduler, fault),
             "stream_interval_ms": opts.stream_interval_ms}
        )  # fmt: skip
        # The engine process spaces each sequence's outputs itself (openvino_pipe.Pacer).
        self.paces_stream = where is PipelineProcess
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
        with self._transformers_lock:  # xgrammar reads the vocabulary from transformers' tokenizer
            if self._transformers_tokenizer is None:
                self._transformers_tokenizer = self._transformers_pair()[0]
        return compile_for_openvino(
            self, self._transformers_tokenizer, vocab_size=vocab, stop_token_ids=self.eos_token_ids, spec=spec
        )

    def _transformers_pair(self) -> tuple[Any, Any]:
        return _hf.fast_tokenizer(
            self._path, trust_remote_code=self._trust_remote_code, needed="the openvino engine needs one",
            gguf_file=self._gguf_tokenizer,
        )  # fmt: skip

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
        if self.speculative is not None:
            config.update(self.speculative.fields())
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
                    finished=cast("FinishReason | None", finished),  # a string: never built per token
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
        """The IR (and a draft model's) and the KV cache, or the engine process's resident memory
        when that is more (it also holds the OpenVINO runtime and the compiled model's buffers)."""
        weights = self._model_dir.stat().st_size if self._model_dir.is_file() else ir_bytes(self._model_dir)
        if self._draft_dir is not None:
            weights += ir_bytes(self._draft_dir)
        model = weights + max(self.kv_cache_bytes, self.allocated_kv_bytes())
        pipeline = self._pipeline
        return max(model, pipeline.rss_bytes() if pipeline is not None else 0)

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        self._live.clear()
        if pipeline is not None:
            pipeline.close()
