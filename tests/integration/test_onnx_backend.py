"""The ONNX Runtime engine against the torch engine: a real torch.onnx export, a real session."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from support.models import EMBED_TEXTS, cosines, minilm, tiny_bert

from hfd.backends import hardware
from hfd.backends.base import LoadOptions

pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
pytest.importorskip("onnx", reason="the onnx package (needed to export) is not installed")

from hfd.backends.onnx_backend import OnnxBackend, prepare_onnx, providers_for
from hfd.backends.torch_backend import TorchBackend
from hfd.client.errors import InvalidRequest, ModelUnavailable

TEXTS = list(EMBED_TEXTS)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.mark.slow
@pytest.mark.parametrize("model", [tiny_bert, minilm], ids=["tiny-bert", "minilm"])
def test_embeddings_match_torch(model: object, cache_dir: Path) -> None:
    path = model()  # type: ignore[operator]
    ort = OnnxBackend().load_encoder(LoadOptions(path=path, task="embed", cache_dir=cache_dir, threads=1))
    pt = TorchBackend().load_encoder(LoadOptions(path=path, task="embed", threads=1))
    assert (ort.dimensions, ort.max_length) == (pt.dimensions, pt.max_length)
    assert ort.providers == ["CPUExecutionProvider"]
    a, b = ort.embed(ort.tokenize(TEXTS)), pt.embed(pt.tokenize(TEXTS))
    assert a.shape == (len(TEXTS), pt.dimensions) and a.dtype == np.float32
    assert cosines(a, b).min() >= 0.999
    # Batch and sequence axes are dynamic: a different batch shape runs and agrees.
    alone = ort.embed(ort.tokenize(TEXTS[3:4]))
    assert cosines(alone, a[3:4])[0] >= 0.9999
    assert ort.embed(ort.tokenize([])).shape == (0, pt.dimensions)
    ort.close()


def test_a_shipped_graph_is_used_without_export(cache_dir: Path, tmp_path: Path) -> None:
    opts = LoadOptions(path=tiny_bert(), task="embed", cache_dir=cache_dir, threads=1)
    exported, _ = prepare_onnx(opts)
    model_dir = tmp_path / "with-onnx"
    shutil.copytree(tiny_bert(), model_dir)
    (model_dir / "onnx").mkdir()
    shutil.copy(exported, model_dir / "onnx" / "model.onnx")
    # No cache directory: an export would be refused, so this load must use the shipped graph.
    shipped = OnnxBackend().load_encoder(LoadOptions(path=model_dir, task="embed", threads=1))
    ref = OnnxBackend().load_encoder(opts)
    np.testing.assert_allclose(
        shipped.embed(shipped.tokenize(TEXTS)), ref.embed(ref.tokenize(TEXTS)), atol=1e-6
    )
    with pytest.raises(ModelUnavailable, match="cache directory"):
        OnnxBackend().load_encoder(LoadOptions(path=tiny_bert(), task="embed"))


def test_pickled_weights_are_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "pickled"
    model_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_bert() / name, model_dir / name)
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(InvalidRequest) as err:
        OnnxBackend().load_encoder(LoadOptions(path=model_dir, task="embed", cache_dir=tmp_path / "cache"))
    assert err.value.param == "allow_pickle"
    assert not (tmp_path / "cache").exists()


def test_generation_and_unknown_devices_are_refused(cache_dir: Path) -> None:
    backend = OnnxBackend()
    assert backend.tasks == frozenset({"embed"})
    with pytest.raises(InvalidRequest):
        backend.load_generator(LoadOptions(path=tiny_bert(), task="generate"))
    with pytest.raises(InvalidRequest, match="does not run"):
        providers_for("tpu:0")
    if "CUDAExecutionProvider" not in hardware.probe_onnxruntime().providers:
        with pytest.raises(ModelUnavailable, match="CUDAExecutionProvider"):
            backend.load_encoder(
                LoadOptions(path=tiny_bert(), task="embed", device="cuda:0", cache_dir=cache_dir)
            )
    assert providers_for("cpu") == ["CPUExecutionProvider"]
