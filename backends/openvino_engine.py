"""OpenVINO GenAI's ``ContinuousBatchingPipeline`` and its requests' handles: ``PipelineEngine``
runs in the engine process (``openvino_process``), or in the calling process behind
``LocalPipeline``, which has the interface of ``openvino_process.PipelineProcess``.

Nothing here imports openvino at module import time.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from hfd.backends import load_progress
from hfd.backends.openvino_pipe import Output, merge
from hfd.backends.openvino_speculative import pipeline_properties, warm_up_fields
from hfd.client.errors import ModelUnavailable

log = logging.getLogger(__name__)

# Request ids of the warm-up batch: far above any sequence id the daemon hands out.
_WARM_UP_ID: Final = 1 << 62


def pipeline_init(
    model_dir: Path, device: str, properties: dict[str, Any], scheduler: dict[str, Any], fault: str | None
) -> dict[str, Any]:
    """What a pipeline is made from, as the plain map the ``init`` message carries."""
    return {"model_dir": str(model_dir), "device": device, "properties": properties,
            "scheduler": scheduler, "fault": fault}  # fmt: skip


def generation_config(fields: dict[str, Any]) -> Any:
    """An ``openvino_genai.GenerationConfig`` from the plain fields that cross the pipe."""
    import openvino_genai as ov_genai

    config = ov_genai.GenerationConfig()
    for name, value in fields.items():
        if name == "structured_output":  # json_schema, regex or grammar (backends.grammar_openvino)
            config.structured_output_config = ov_genai.StructuredOutputConfig(**value)
            continue
        setattr(config, name, set(value) if name == "stop_token_ids" else value)
    return config


def warn_failed(seq_id: int, error: Any) -> None:
    if error:
        log.warning("engine failed a sequence", extra={"seq": seq_id, "error": error})


class PipelineEngine:
    """The pipeline and its requests' handles."""

    def __init__(self, init: dict[str, Any]) -> None:
        import openvino_genai as ov_genai

        scheduler = ov_genai.SchedulerConfig()
        for name, value in init["scheduler"].items():
            setattr(scheduler, name, value)
        self._pipeline = ov_genai.ContinuousBatchingPipeline(
            init["model_dir"],
            scheduler,
            init["device"],
            pipeline_properties(init["properties"], init["device"]),
        )
        self._handles: dict[int, Any] = {}
        self._logprobs: dict[int, int] = {}  # sequences that asked for logprobs: echo's prompt length
        self._status = ov_genai.GenerationStatus
        self._finish = ov_genai.GenerationFinishReason
        self._device = str(init["device"])
        self._properties = dict(init["properties"])
        self._fault = init.get("fault")

    def warm_up(self) -> str:
        """Run one short batch (two prompts of a few tokens, two new tokens each) to the end,
        so a pipeline that cannot compute on this machine fails now; returns the precision the
        device computes in."""
        import numpy as np
        import openvino as ov

        if self._fault == "warmup":  # tests only (see openvino_backend._test_fault)
            os.kill(os.getpid(), signal.SIGFPE)
        config = generation_config(
            {"max_new_tokens": 2, "min_new_tokens": 2, "ignore_eos": True, "do_sample": False,
             **warm_up_fields(self._properties)}
        )  # fmt: skip
        handles = [
            self._pipeline.add_request(_WARM_UP_ID + i, ov.Tensor(np.asarray([ids], dtype=np.int64)), config)
            for i, ids in enumerate(([1, 2, 3], [3, 2, 1, 2, 3]))
        ]
        for _ in range(64):  # two prefills and two decodes, with room to spare
            if not self._pipeline.has_non_finished_requests():
                break
            self._pipeline.step()
        for handle in handles:
            if handle.get_status() == self._status.RUNNING:
                handle.cancel()
            elif handle.get_status() == self._status.IGNORED:
                raise RuntimeError("the warm-up prompt does not fit the KV cache")
        return self.precision()

    def precision(self) -> str:
        """What the device computes in: the hint given, else the plugin's default here."""
        from hfd.backends.openvino_cpu import precision_name

        if "INFERENCE_PRECISION_HINT" in self._properties:
            return precision_name(self._properties["INFERENCE_PRECISION_HINT"])
        try:
            import openvino as ov

            return precision_name(ov.Core().get_property(self._device, "INFERENCE_PRECISION_HINT"))
        except Exception:
            return "unknown"

    @property
    def busy(self) -> bool:
        return bool(self._handles)

    def add(self, seq_id: int, ids: list[int], params: dict[str, Any]) -> None:
        import numpy as np
        import openvino as ov

        tensor = ov.Tensor(np.asarray([ids], dtype=np.int64))
        self._handles[seq_id] = self._pipeline.add_request(seq_id, tensor, generation_config(params))
        if params.get("logprobs"):
            # With echo, GenAI's first output starts with the prompt (and its logprobs, the
            # first a placeholder): that many leading ids are split off as the prompt's.
            self._logprobs[seq_id] = len(ids) if params.get("echo") else 0

    def cancel(self, seq_id: int) -> None:
        handle = self._handles.pop(seq_id, None)
        self._logprobs.pop(seq_id, None)
        if handle is not None:
            handle.cancel()  # frees its KV blocks at the next step

    def step(self) -> list[list[Any]]:
        stepped = self._pipeline.has_non_finished_requests()
        if stepped:
            self._pipeline.step()
        outputs: list[list[Any]] = []
        for seq_id, handle in list(self._handles.items()):
            tokens: list[int] = []
            reason = None
            lps: list[float] | None = None if seq_id not in self._logprobs else []
            if handle.can_read():
                for out in handle.read().values():
                    tokens.extend(int(t) for t in out.generated_ids)
                    if lps is not None:
                        lps.extend(float(x) for x in out.generated_log_probs)
                    reason = out.finish_reason
            prompt: list[float] | None = None
            echo = self._logprobs.get(seq_id, 0)
            if echo and lps is not None and len(tokens) >= echo:
                prompt, lps, tokens = lps[:echo], lps[echo:], tokens[echo:]
                self._logprobs[seq_id] = 0
            status = handle.get_status()
            finished = None
            if status != self._status.RUNNING:
                finished = self._finish_reason(status, reason)
                del self._handles[seq_id]
            elif not stepped:  # the pipeline has no work for a handle it calls running: never spin
                finished = "error"
                del self._handles[seq_id]
            if finished is not None:
                self._logprobs.pop(seq_id, None)
            if tokens or finished is not None or prompt is not None:
                error = "the prompt does not fit the KV cache" if status == self._status.IGNORED else None
                outputs.append([seq_id, tokens, finished, error, lps, prompt])
        return outputs

    def _finish_reason(self, status: Any, reason: Any) -> str:
        if status == self._status.IGNORED:
            return "error"
        if status in (self._status.CANCEL, self._status.STOP):
            return "cancelled"
        return "length" if reason == self._finish.LENGTH else "stop"

    def kv_bytes(self) -> int:
        try:
            return int(self._pipeline.get_metrics().kv_cache_size_in_bytes)
        except Exception:
            return 0


class LocalPipeline:
    """The same pipeline in the calling process, behind the same interface as ``PipelineProcess``.

    Its steps hold the GIL, so the daemon does not serve with it unless a model asks
    (``pipeline_process = false``); it is how the benchmark drives the pipeline offline.
    """

    def __init__(self, init: dict[str, Any]) -> None:
        init = {k: v for k, v in init.items() if k != "fault"}
        try:
            load_progress.report("compiling")
            self._engine: PipelineEngine | None = PipelineEngine(init)
            load_progress.report("warming")
            self.precision: str | None = self._engine.warm_up()
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO GenAI cannot load the model: {exc}") from exc
        self.pid = os.getpid()
        self.kv_cache_bytes = self._engine.kv_bytes()

    @property
    def alive(self) -> bool:
        return self._engine is not None

    def rss_bytes(self) -> int:
        """0: the pipeline shares this process, whose memory is not the model's alone."""
        return 0

    def _running(self) -> PipelineEngine:
        if self._engine is None:
            raise ModelUnavailable("this OpenVINO pipeline was closed")
        return self._engine

    def add(self, seq_id: int, prompt_ids: Sequence[int], config: dict[str, Any]) -> None:
        try:
            self._running().add(seq_id, list(prompt_ids), config)
        except ModelUnavailable:
            raise
        except Exception as exc:
            raise ModelUnavailable(f"OpenVINO GenAI refused sequence {seq_id}: {exc}") from exc

    def cancel(self, seq_id: int) -> None:
        self._running().cancel(seq_id)

    def interrupt(self) -> None:
        """Nothing to wake: a step here computes, it never waits."""

    def step(self) -> list[Output]:
        engine = self._running()
        outputs = engine.step()
        self.kv_cache_bytes = engine.kv_bytes()
        for seq_id, _, _, error, _, _ in outputs:
            warn_failed(seq_id, error)
        return [
            merge(None, seq_id, tokens, finished, lps, prompt)
            for seq_id, tokens, finished, _, lps, prompt in outputs
        ]

    def close(self) -> None:
        self._engine = None
