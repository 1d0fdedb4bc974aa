"""A cross-encoder served by a real ``hfd serve`` pinned to each engine (ONNX Runtime, OpenVINO
with the f32 hint), over HTTP (plain httpx): ``/v1/rerank`` and ``/v1/score`` equal
sentence-transformers' ``CrossEncoder.predict`` on the same pairs within 1e-4, the model is
served by the pinned engine (``hfd.client`` ``ps``), and concurrent requests equal one at a time.
The daemon's export cache shares the integration tests' exports (content-keyed)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from support.daemon import Daemon, start_daemon
from support.models import REPO_ROOT
from support.task_models import cross_encoder_scores, task_model

from hfd.client import Client

pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")
pytest.importorskip("onnxruntime", reason="the onnxruntime extra is not installed")
pytest.importorskip("openvino", reason="the openvino extra is not installed")

ENGINES = ("onnxruntime", "openvino")
TOL = 1e-4
QUERY = "where do rivers flow"
DOCS = [
    "Rivers flow to the sea.",
    "Cats sleep all day.",
    "The sea is where the rivers end up, far away.",
    "x",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("rerank-engines")
    exports = REPO_ROOT / ".cache" / "test-exports" / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    (workdir / "cache").mkdir()
    (workdir / "cache" / "exports").symlink_to(exports)
    path = str(task_model("cross-encoder"))
    config = "".join(
        f"[[models]]\nname = 'rerank-{e}'\nref = {path!r}\nengine = {e!r}\noptions = {{ dtype = 'float32' }}\n"
        for e in ENGINES
    )
    d = start_daemon(workdir, {}, extra_config=config, timeout=300)
    try:
        yield d
    finally:
        assert d.stop() == 0, "\n".join(d.output[-40:])


def _ok(d: Daemon, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return d.post_ok(path, body, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_rerank_and_score_equal_cross_encoder_on_the_pinned_engine(daemon: Daemon, engine: str) -> None:
    model = f"rerank-{engine}"
    body = _ok(daemon, "/v1/rerank", {"model": model, "query": QUERY, "documents": DOCS, "cache": False})
    expected = cross_encoder_scores([(QUERY, d) for d in DOCS])
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(DOCS))], expected, atol=TOL, rtol=0)
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCS)), key=lambda i: -expected[i])
    with Client(daemon.ipc, timeout=60) as client:
        running = {m.name: m for m in client.ps()}
    assert running[model].engine == engine and running[model].task == "rerank"

    scored = _ok(daemon, "/v1/score", {"model": model, "text_1": QUERY, "text_2": DOCS, "cache": False})
    np.testing.assert_allclose([s["score"] for s in scored["data"]], expected, atol=TOL, rtol=0)

    # Concurrent requests (batched together by the scheduler) equal one at a time.
    def one(i: int) -> float:
        r = _ok(
            daemon, "/v1/rerank", {"model": model, "query": QUERY, "documents": [DOCS[i]], "cache": False}
        )
        return float(r["results"][0]["relevance_score"])

    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(one, [i % len(DOCS) for i in range(16)]))
    np.testing.assert_allclose(together, [expected[i % len(DOCS)] for i in range(16)], atol=TOL, rtol=0)
