"""Every encoder export is checked against its model when it is made, and a failed check is
cached with the export and keeps the export from ever being used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import encoder_models as em
from support.models import REPO_ROOT

from hfd.backends import encoder_check
from hfd.backends.base import LoadOptions
from hfd.client.errors import ModelUnavailable

EXPORT_CACHE = REPO_ROOT / ".cache" / "test-exports"


def test_an_export_that_computes_something_else_is_refused_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wrapper hfd used to export with: an additive 4-D mask, which DeBERTa-v2 reads as a
    boolean one (keep and pad swapped). The check catches it, the load refuses, and the next
    load refuses from the cached result without exporting again."""
    pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    import torch

    from hfd.backends import onnx_backend

    class AdditiveMask(torch.nn.Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            additive = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
            return self.model(input_ids=input_ids, attention_mask=additive).last_hidden_state  # type: ignore[no-any-return]

    monkeypatch.setattr(onnx_backend, "_Positional", AdditiveMask)
    opts = LoadOptions(path=em.family("deberta-v2"), task="embed", cache_dir=tmp_path, threads=1)
    with pytest.raises(ModelUnavailable, match="differ from the transformers model") as first:
        onnx_backend.OnnxBackend().load_encoder(opts)
    assert first.value.details["check"]["passed"] is False

    def no_export(*args: object) -> None:
        raise AssertionError("a failed export was exported again")

    monkeypatch.setattr(onnx_backend, "export_onnx", no_export)
    with pytest.raises(ModelUnavailable, match="is not used"):
        onnx_backend.OnnxBackend().load_encoder(opts)


def test_onnx_exports_record_a_passing_check() -> None:
    pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    from hfd.backends.onnx_backend import prepare_onnx

    graph, _ = prepare_onnx(LoadOptions(path=em.family("bert"), task="embed", cache_dir=EXPORT_CACHE))
    check = encoder_check.read(graph.parent)
    assert check is not None and check["passed"] and check["min_cosine"] >= 0.999
    assert check["tokens"] > check["rows"]  # rows of different lengths: padding was in play


def test_openvino_exports_record_a_passing_check() -> None:
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from hfd.backends.openvino_export import prepare_ir

    model_dir, _ = prepare_ir(
        LoadOptions(path=em.family("bert"), task="embed", cache_dir=EXPORT_CACHE), "embed", "fp32"
    )
    check = encoder_check.read(model_dir)
    assert check is not None and check["passed"] and check["min_cosine"] >= 0.999


def test_folders_around_one_transformer_share_its_export() -> None:
    """Only the config and weights make the graph: a sentence-transformers folder wrapping the
    tiny BERT reuses the BERT's export."""
    a = encoder_check.weights_identity(em.family("bert"))
    b = encoder_check.weights_identity(em.st_folder("old", "cls-dense"))
    assert a == b
    assert a != encoder_check.weights_identity(em.family("roberta"))
