"""The OpenVINO engine's encoder: an ``EncoderModel`` over a compiled OpenVINO model (the IR from
``openvino_export``) that outputs token embeddings, pooled as the snapshot's sentence-transformers
modules say (``numpy_encoder``).

Nothing here imports openvino at module import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hfd.backends import openvino_cpu
from hfd.backends.base import TokenizedBatch
from hfd.backends.numpy_encoder import EncoderHead, GraphEncoder, encoder_feeds, pool
from hfd.backends.openvino_export import ir_bytes
from hfd.client.errors import ModelUnavailable


class OVEncoder(GraphEncoder):
    """An ``EncoderModel`` over a compiled OpenVINO model that outputs token embeddings."""

    name = "openvino"
    weight_format = "fp32"
    threads = 0

    def __init__(self, xml: Path, head: EncoderHead, device: str, properties: dict[str, Any]) -> None:
        import openvino as ov

        super().__init__(head, device)
        self._xml = xml
        core = ov.Core()
        model = core.read_model(xml)
        inputs = [i.get_any_name() for i in model.inputs]
        self._ports(xml, inputs, [o.get_any_name() for o in model.outputs])
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

    def embed(self, batch: TokenizedBatch) -> np.ndarray:
        if not batch.ids:
            return self._head.empty()
        if self._static:
            rows = [self._run(*self._head.pad(TokenizedBatch([ids]), self.max_length)) for ids in batch.ids]
            return np.concatenate(rows, axis=0)
        return self._run(*self._head.pad(batch))

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        inputs = encoder_feeds(self._inputs, ids, mask)
        self._request.infer(inputs)
        hidden = self._request.get_tensor(self._output).data
        return pool(hidden, mask, self._head.pooling)

    def memory_bytes(self) -> int:
        return ir_bytes(self._xml.parent)

    def close(self) -> None:
        self._request = None
        self._compiled = None
