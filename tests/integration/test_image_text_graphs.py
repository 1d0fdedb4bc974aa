"""CLIP and SigLIP on ONNX Runtime and OpenVINO (the exported text and vision towers) against
transformers' own ``get_text_features`` / ``get_image_features`` on the same inputs (the
oracle's tokenizer and PIL image processor applied here): every vector cosine >= 0.999, a
request's inputs together equal to each alone, and the export's recorded check. Exports are real
and cached under ``.cache/test-exports`` by content."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import clip_oracle, media_models
from support.models import REPO_ROOT, cosines

from hfd.backends.base import LoadOptions
from hfd.daemon import images

pytest.importorskip("torch", reason="the oracle is transformers on torch")

EXPORT_CACHE = REPO_ROOT / ".cache" / "test-exports"
TEXTS = ["a photo of a cat", "the weather today is sunny", "hola"]


def _path(kind: str) -> Path:
    return media_models.tiny_clip() if kind == "clip" else media_models.tiny_siglip()


@functools.cache
def _engine(engine: str, kind: str) -> Any:
    from hfd.backends import registry

    opts = LoadOptions(
        path=_path(kind), task="image-embed", threads=1, dtype="float32", cache_dir=EXPORT_CACHE
    )
    return registry.get_backend(engine).load_image_text(opts)


@functools.cache
def _oracle(kind: str) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    path = _path(kind)
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _skip_without(engine: str) -> None:
    pytest.importorskip(engine, reason=f"the {engine} extra is not installed")
    if engine == "onnxruntime":
        pytest.importorskip("onnxscript", reason="exporting to ONNX needs onnxscript")


def _engine_and_oracle(engine: str, kind: str) -> tuple[Any, tuple[Any, Any]]:
    """The engine's image-text model of ``kind`` (skipped without the extra) and transformers'."""
    _skip_without(engine)
    return _engine(engine, kind), _oracle(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_text_vectors_match_get_text_features(engine: str, kind: str) -> None:
    got, (model, tokenizer) = _engine_and_oracle(engine, kind)
    assert got.name == engine
    expected = clip_oracle.text_features(model, tokenizer, kind, TEXTS, got.max_length)
    vectors = got.embed_texts(TEXTS)
    assert vectors.shape == expected.shape and vectors.dtype == np.float32
    assert (cosines(vectors, expected) >= 0.999).all()
    alone = np.concatenate([got.embed_texts([t]) for t in TEXTS])
    assert (cosines(vectors, alone) >= 0.999).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["clip", "siglip"])
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_image_vectors_match_get_image_features(engine: str, kind: str) -> None:
    got, (model, _) = _engine_and_oracle(engine, kind)
    raws = [media_models.png(seed=s, width=40 + 8 * s, height=36) for s in range(3)]
    expected = clip_oracle.image_features(model, kind, _path(kind), raws)
    decoded = [images.open_image(r, 10**6, "input") for r in raws]
    vectors = got.embed_images(decoded)
    assert (cosines(vectors, expected) >= 0.999).all()
    alone = np.concatenate([got.embed_images([img]) for img in decoded])
    assert (cosines(vectors, alone) >= 0.999).all()
    # A mixed request keeps its order (the media path's one call per kind).
    mixed, tokens = images._compute(got, ["a photo of a cat", decoded[0]])
    assert tokens > 0 and cosines(mixed[1], vectors[0]) >= 0.999


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_the_export_records_its_check(engine: str) -> None:
    from hfd.backends import clip_graph

    _skip_without(engine)
    opts = LoadOptions(path=_path("clip"), task="image-embed", cache_dir=EXPORT_CACHE)
    export_dir, _ = clip_graph.prepare(opts, engine)
    check = json.loads((export_dir / "hfd-check.json").read_text())
    assert check["passed"] and check["min_cosine"] >= 0.999
    assert all((export_dir / f).is_file() for f in clip_graph.FILES[engine].values())
