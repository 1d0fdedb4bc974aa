"""The derived-artifact cache: keys from content, atomic builds, and warm loads that skip the export."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.models import tiny_bert

from hfd.backends import exports, onnx_backend
from hfd.backends.base import LoadOptions
from hfd.backends.exports import MARKER, ExportCache, export_key, source_identity
from hfd.client.errors import InvalidRequest, ModelUnavailable


def _model_copy(tmp_path: Path, name: str = "model") -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "bert"}')
    (src / "weights.bin").write_bytes(os.urandom(4096))
    (src / "sub").mkdir()
    (src / "sub" / "extra.json").write_text("{}")
    return src


def _key(path: Path, **overrides: object) -> str:
    args: dict = {"engine": "openvino", "engine_version": "1.0", "options": {"task": "embed"}}  # type: ignore[type-arg]
    args.update(overrides)
    return export_key(path, **args)


def test_key_follows_content_not_location_or_mtime(tmp_path: Path) -> None:
    a = _model_copy(tmp_path, "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.utime(b / "weights.bin", (time.time() - 3600, time.time() - 3600))
    assert _key(a) == _key(b)
    data = bytearray((b / "weights.bin").read_bytes())
    data[100] ^= 0xFF
    (b / "weights.bin").write_bytes(bytes(data))
    assert _key(a) != _key(b)


def test_key_changes_with_engine_version_and_options(tmp_path: Path) -> None:
    src = _model_copy(tmp_path)
    base = _key(src)
    assert _key(src, engine_version="2.0") != base
    assert _key(src, engine="onnxruntime") != base
    assert _key(src, options={"task": "embed", "weight_format": "int8"}) != base
    assert _key(src) == base


def test_hf_snapshot_is_identified_by_its_commit(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = tmp_path / "models--org--name" / "snapshots" / commit
    snap.parent.mkdir(parents=True)
    shutil.copytree(_model_copy(tmp_path), snap)
    assert source_identity(snap) == {"commit": commit}
    assert source_identity(tmp_path / "model", commit="abc") == {"commit": "abc"}
    files = source_identity(tmp_path / "model")["files"]
    assert [f[0] for f in files] == ["config.json", "sub/extra.json", "weights.bin"]


def test_build_once_then_warm(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path / "cache")
    calls: list[Path] = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "graph.xml").write_text("<net/>")

    assert not cache.has("k1")
    cold = cache.get_or_build("k1", build, {"engine": "test"})
    assert cold.built and len(calls) == 1
    assert cache.has("k1") and (cold.path / "graph.xml").read_text() == "<net/>"
    assert cache.metadata("k1")["engine"] == "test"  # type: ignore[index]
    marker = (cold.path / MARKER).stat()
    warm = cache.get_or_build("k1", build)
    assert not warm.built and len(calls) == 1
    assert warm.path == cold.path
    assert (warm.path / MARKER).stat().st_mtime_ns == marker.st_mtime_ns
    assert calls[0] != cold.path  # built elsewhere, then renamed into place


def test_a_failed_build_leaves_nothing(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path / "cache")

    def broken(out: Path) -> None:
        (out / "half.bin").write_bytes(b"x" * 100)
        raise RuntimeError("exporter crashed")

    with pytest.raises(ModelUnavailable, match="exporter crashed") as err:
        cache.get_or_build("k2", broken)
    assert err.value.code == "model_unavailable"
    assert not cache.has("k2") and not cache.path("k2").exists()
    assert [p.name for p in cache.root.iterdir() if not p.name.endswith(".lock")] == []

    def refuses(out: Path) -> None:
        raise InvalidRequest("bad model", param="path")

    with pytest.raises(InvalidRequest):  # hfd errors pass through unchanged
        cache.get_or_build("k2", refuses)


def test_a_directory_without_marker_is_rebuilt(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path / "cache")
    cache.path("k3").mkdir(parents=True)
    (cache.path("k3") / "stale.bin").write_text("old")
    result = cache.get_or_build("k3", lambda out: (out / "new.bin").write_text("new"))
    assert result.built
    assert sorted(p.name for p in result.path.iterdir()) == [MARKER, "new.bin"]


def test_concurrent_builders_export_once(tmp_path: Path) -> None:
    cache = ExportCache(tmp_path / "cache")
    calls = []
    gate = threading.Event()

    def slow(out: Path) -> None:
        calls.append(1)
        gate.wait(5)
        (out / "a").write_text("a")

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_build("k4", slow))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    while not calls:
        time.sleep(0.01)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1
    assert sorted(r.built for r in results) == [False, False, True]


def test_onnx_warm_load_skips_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = LoadOptions(path=tiny_bert(), task="embed", cache_dir=tmp_path / "cache", threads=1)
    exporter_calls: list[Path] = []
    real_export = onnx_backend.export_onnx

    def counting_export(source: Path, out: Path, *args: object) -> None:
        exporter_calls.append(out)
        real_export(source, out, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(onnx_backend, "export_onnx", counting_export)
    backend = onnx_backend.OnnxBackend()
    texts = ["the quick brown fox", "rain on the roof"]
    cold = backend.load_encoder(opts)
    first = cold.embed(cold.tokenize(texts))
    assert len(exporter_calls) == 1
    key = onnx_backend.onnx_export_key(opts)
    cache = ExportCache(opts.cache_dir)  # type: ignore[arg-type]
    assert cache.has(key)
    marker = (cache.path(key) / MARKER).read_bytes()

    warm = backend.load_encoder(opts)
    assert len(exporter_calls) == 1  # the exporter was not invoked again
    assert (cache.path(key) / MARKER).read_bytes() == marker
    np.testing.assert_allclose(warm.embed(warm.tokenize(texts)), first, rtol=1e-5, atol=1e-6)
    assert exports.exports_root(opts.cache_dir) == cache.root  # type: ignore[arg-type]
