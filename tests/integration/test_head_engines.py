"""Classification heads (rerank, classify, token-classify) on ONNX Runtime and OpenVINO against
transformers' ``AutoModelFor*Classification`` on the same ids: logits within 1e-4 (f32; OpenVINO
compiled with the f32 hint, ``dtype = "float32"``, as the embedding tests do), a batch equal to
each input alone, and the head's scores equal to the torch engine's through the one
post-processing (``text_post``). The exports are real (dynamo ONNX, optimum-intel IR), cached
under ``.cache/test-exports`` by content, and a shipped graph without logits is not mistaken for
a head."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support.models import REPO_ROOT
from support.task_models import task_model

from hfd.backends.base import LoadOptions
from hfd.backends.heads import batch_of

pytest.importorskip("torch", reason="the oracle is transformers on torch")

EXPORT_CACHE = REPO_ROOT / ".cache" / "test-exports"
TOL = 1e-4
QUERY = "which city is the capital of france"
DOCS = ["Paris is the capital of France.", "A fox jumps over a dog.", "Rivers flow to the sea.", "x"]
TEXTS = ["Paris is the capital of France and John wrote a letter.", "hola", "He wrote a long letter."]
CASES = [("cross-encoder", "rerank"), ("classifier", "classify"), ("ner", "token-classify")]


def _skip_without(engine: str) -> None:
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
        pytest.importorskip("onnxscript", reason="exporting to ONNX needs onnxscript")
    else:
        pytest.importorskip("openvino", reason="the openvino extra is not installed")
        pytest.importorskip("optimum.intel", reason="exporting to IR needs optimum-intel")


@functools.cache
def _load(engine: str, kind: str, task: str) -> Any:
    from hfd.backends import registry

    opts = LoadOptions(path=task_model(kind), task=task, threads=1, dtype="float32", cache_dir=EXPORT_CACHE)
    return registry.get_backend(engine).load_encoder(opts)


def _encoded(model: Any, task: str) -> list[Any]:
    if task == "rerank":
        return model.tokenizer.encode([QUERY] * len(DOCS), DOCS)  # type: ignore[no-any-return]
    return model.tokenizer.encode(TEXTS)  # type: ignore[no-any-return]


def _oracle(kind: str, task: str, encoded: list[Any]) -> list[np.ndarray]:
    """transformers' logits for each input alone (no padding at all)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForTokenClassification if task == "token-classify" else AutoModelForSequenceClassification
    model = auto.from_pretrained(task_model(kind), local_files_only=True, dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for e in encoded:
            ids = torch.tensor([e.ids])
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                           token_type_ids=torch.tensor([e.type_ids])).logits[0]  # fmt: skip
            out.append(logits.numpy())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
@pytest.mark.parametrize(("kind", "task"), CASES, ids=[c[0] for c in CASES])
def test_logits_equal_transformers_batched_and_alone(engine: str, kind: str, task: str) -> None:
    _skip_without(engine)
    model = _load(engine, kind, task)
    assert model.name == engine and model.dimensions == len(model.head.labels)
    encoded = _encoded(model, task)
    batched = model.embed(batch_of(encoded))
    assert batched.dtype == np.float32 and batched.shape[0] == len(encoded)
    expected = _oracle(kind, task, encoded)
    for i, (e, want) in enumerate(zip(encoded, expected, strict=True)):
        row = batched[i][: len(e.ids)] if task == "token-classify" else batched[i]
        np.testing.assert_allclose(row, want, atol=TOL, rtol=0, err_msg=f"input {i} in the batch")
        alone = model.embed(batch_of([e]))[0]
        np.testing.assert_allclose(alone, row, atol=TOL, rtol=0, err_msg=f"input {i} alone")


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["onnxruntime", "openvino"])
def test_scores_equal_the_torch_engines_through_the_shared_post_processing(engine: str) -> None:
    from hfd.daemon.tasks import text_post

    _skip_without(engine)
    graph, torch_head = _load(engine, "cross-encoder", "rerank"), _load("torch", "cross-encoder", "rerank")
    encoded = _encoded(graph, "rerank")
    a = text_post.relevance(graph.embed(batch_of(encoded)), graph.head)
    b = text_post.relevance(torch_head.embed(batch_of(encoded)), torch_head.head)
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
    classifier = _load(engine, "classifier", "classify")
    probs = text_post.class_probs(
        classifier.embed(batch_of(_encoded(classifier, "classify"))), classifier.head
    )
    ref = _load("torch", "classifier", "classify")
    want = text_post.class_probs(ref.embed(batch_of(_encoded(ref, "classify"))), ref.head)
    np.testing.assert_allclose(probs, want, atol=TOL, rtol=0)


@pytest.mark.slow
def test_the_export_records_its_check_and_a_shipped_encoder_graph_is_not_a_head(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
    from hfd.backends import onnx_heads

    opts = LoadOptions(path=task_model("cross-encoder"), task="rerank", threads=1, cache_dir=EXPORT_CACHE)
    graph, _ = onnx_heads.prepare(opts, "sequence")
    check = json.loads((graph.parent / "hfd-check.json").read_text())
    assert check["passed"] and check["max_abs_diff"] <= check["bound"]
    # A snapshot shipping the head graph runs it as it is (no export) ...
    shipped = tmp_path / "shipped"
    shutil.copytree(task_model("cross-encoder"), shipped)
    (shipped / "onnx").mkdir()
    shutil.copy(graph, shipped / "onnx" / "model.onnx")
    assert onnx_heads.prepare(LoadOptions(path=shipped, task="rerank", cache_dir=None), "sequence") == (
        shipped / "onnx" / "model.onnx",
        False,
    )
    # ... but a shipped embedding graph (no logits output) is not taken for one.
    from hfd.backends.onnx_backend import prepare_onnx

    bare = tmp_path / "bare"
    shutil.copytree(task_model("cross-encoder"), bare)
    encoder_graph, _ = prepare_onnx(
        LoadOptions(path=task_model("cross-encoder"), task="embed", cache_dir=EXPORT_CACHE)
    )
    shutil.copy(encoder_graph, bare / "model.onnx")
    assert onnx_heads._shipped_head(bare) is None


def test_pickled_weights_are_refused_before_any_export(tmp_path: Path) -> None:
    from hfd.backends import onnx_heads, openvino_heads
    from hfd.client.errors import HfdError

    source = tmp_path / "pickled"
    shutil.copytree(task_model("cross-encoder"), source)
    (source / "model.safetensors").unlink()
    (source / "pytorch_model.bin").write_bytes(b"not really a pickle")
    opts = LoadOptions(path=source, task="rerank", cache_dir=tmp_path / "cache")
    with pytest.raises(HfdError, match="pickle"):
        onnx_heads.prepare(opts, "sequence")
    with pytest.raises(HfdError, match="pickle"):
        openvino_heads.prepare(opts, "sequence", "fp32")
    assert not (tmp_path / "cache").exists()


def test_the_head_session_on_the_cpu_takes_the_serving_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ONNX Runtime head's session is built by the one serving rule (threads, no spinning on the
    CPU: ``hfd.backends.cpu_pools``), not options of its own."""
    _skip_without("onnxruntime")
    import onnxruntime as ort

    from hfd.backends import onnx_heads

    built: list[Any] = []
    real = ort.InferenceSession

    def recording(*args: Any, **kwargs: Any) -> Any:
        built.append(kwargs["sess_options"])
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    opts = LoadOptions(path=task_model("cross-encoder"), task="rerank", threads=2, cache_dir=EXPORT_CACHE)
    onnx_heads.load(opts)
    served = built[-1]
    assert served.intra_op_num_threads == 2
    assert served.get_session_config_entry("session.intra_op.allow_spinning") == "0"
