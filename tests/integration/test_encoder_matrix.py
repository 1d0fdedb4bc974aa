"""Every encoder family and sentence-transformers layout, on every engine, against the reference.

For each model x engine (torch, ONNX Runtime, OpenVINO) the model is loaded through the engine's
own API and embeds a probe batch of texts of very different lengths (so most rows are padded);
each vector must have a cosine of at least 0.999 with sentence-transformers' ``encode()`` (for
sentence-transformers folders) or with transformers plus mean pooling (plain folders, which hfd
pools with the mean as sentence-transformers does). Where an engine cannot serve a family, the
load must refuse with the reason before any export is tried.

Models are built once and cached under ``.cache/test-models``; exports under
``.cache/test-exports`` (keyed by content, so a changed builder or exporter exports afresh).
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import encoder_models as em
from support.models import REPO_ROOT, cosines

from hfd.backends.base import LoadOptions
from hfd.client.errors import ModelUnavailable

EXPORT_CACHE = REPO_ROOT / ".cache" / "test-exports"
ENGINES = ("torch", "onnxruntime", "openvino")

MODELS: dict[str, Any] = {name: functools.partial(em.family, name) for name in em.FAMILIES}
MODELS.update(
    {
        f"st-{layout}-{variant}": functools.partial(em.st_folder, layout, variant)
        for layout in ("old", "new")
        for variant in em.ST_VARIANTS
    }
)

# (model, engine) -> what the refusal must say. Mirrored in docs/engines.md.
GAPS = {
    ("modernbert", "openvino"): "no OpenVINO export for ModernBERT",
}


@functools.cache
def reference(model: str) -> np.ndarray:
    path = MODELS[model]()
    if (path / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return np.asarray(st.encode(em.PROBE, batch_size=len(em.PROBE), convert_to_numpy=True))
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    network = AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tokenizer(em.PROBE, padding=True, return_tensors="pt")
    accepted = inspect.signature(network.forward).parameters
    with torch.no_grad():
        hidden = network(**{k: v for k, v in batch.items() if k in accepted}).last_hidden_state
    weights = batch["attention_mask"].unsqueeze(-1).float()
    return ((hidden * weights).sum(1) / weights.sum(1)).numpy()


def load(engine: str, path: Path) -> Any:
    opts = {"path": path, "task": "embed", "threads": 1}
    if engine == "torch":
        from hfd.backends.torch_backend import TorchBackend

        return TorchBackend().load_encoder(LoadOptions(**opts))
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
        from hfd.backends.onnx_backend import OnnxBackend

        return OnnxBackend().load_encoder(LoadOptions(**opts, cache_dir=EXPORT_CACHE))
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from hfd.backends.openvino_backend import OpenVINOBackend

    # float32: the reference is fp32; OpenVINO computes in bf16 on CPUs with native bf16 otherwise.
    return OpenVINOBackend().load_encoder(LoadOptions(**opts, cache_dir=EXPORT_CACHE, dtype="float32"))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("model", list(MODELS))
def test_embeddings_match_the_reference(model: str, engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    path = MODELS[model]()
    gap = GAPS.get((model, engine))
    if gap is not None:
        if engine == "openvino":
            pytest.importorskip("openvino", reason="the openvino extra is not installed")
            from hfd.backends import openvino_export

            def no_export(*args: object, **kwargs: object) -> None:
                raise AssertionError("the exporter ran for a family the engine is known not to serve")

            monkeypatch.setattr(openvino_export, "export_ir", no_export)
        with pytest.raises(ModelUnavailable, match=gap):
            load(engine, path)
        return
    want = reference(model)
    encoder = load(engine, path)
    try:
        got = encoder.embed(encoder.tokenize(em.PROBE))
    finally:
        encoder.close()
    assert got.shape == want.shape and encoder.dimensions == want.shape[1]
    cos = cosines(got, want)
    assert cos.min() >= 0.999, f"{model} on {engine}: cosines {np.round(cos, 5).tolist()}"


@pytest.mark.parametrize("model", list(MODELS))
def test_the_probe_tells_texts_apart(model: str) -> None:
    """The comparison above means something only if the model does not embed every text alike."""
    unit = reference(model) / np.linalg.norm(reference(model), axis=1, keepdims=True)
    similar = unit @ unit.T
    assert similar[~np.eye(len(unit), dtype=bool)].max() < 0.99


def test_both_sentence_transformers_layouts_are_covered() -> None:
    old = em.st_module_types(em.st_folder("old", "cls-dense"))
    new = em.st_module_types(em.st_folder("new", "cls-dense"))
    assert all(t.startswith("sentence_transformers.models.") for t in old)
    assert any(t.startswith("sentence_transformers.base.modules.") for t in new)
    new_pooling = em.st_folder("new", "cls-dense") / "1_Pooling" / "config.json"
    assert "embedding_dimension" in new_pooling.read_text()
