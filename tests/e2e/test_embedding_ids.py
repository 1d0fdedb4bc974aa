"""Token-id input for embeddings on a real ``hfd serve`` (torch): ids from the model's own
tokenizer embed exactly as the text does, ids outside the vocabulary are a 400, and LangChain's
``OpenAIEmbeddings`` works offline. Its default tokenises with tiktoken, which downloads
``cl100k_base`` on first use (no network here, and tiktoken's ids are not a local model's); with
``tiktoken_enabled=False`` and the model folder as ``tiktoken_model_name`` it uses the model's
own tokenizer through transformers and needs nothing from the network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from support.daemon import Daemon, start_daemon  # noqa: E402
from support.models import tiny_bert  # noqa: E402


@pytest.fixture(scope="module")
def bert() -> Path:
    return tiny_bert()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, bert: Path) -> Iterator[Daemon]:
    root = tmp_path_factory.mktemp("embedding-ids")
    models = f'[[models]]\nname = "emb"\nref = {str(bert)!r}\nengine = "torch"\n'
    d = start_daemon(root / "work", {}, extra_config=models)
    try:
        yield d
    finally:
        d.stop()


def _embed(daemon: Daemon, inp: object) -> httpx.Response:
    return httpx.post(daemon.http + "/v1/embeddings", json={"model": "emb", "input": inp}, timeout=60)


def test_token_ids_embed_as_their_text(daemon: Daemon, bert: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(bert)
    texts = ["the cat sat", "a dog ran in the park"]
    ids = [tok(t)["input_ids"] for t in texts]
    by_text = np.array([d["embedding"] for d in _embed(daemon, texts).json()["data"]])
    by_ids = _embed(daemon, ids).json()
    assert np.allclose(np.array([d["embedding"] for d in by_ids["data"]]), by_text, atol=1e-5)
    assert by_ids["usage"]["prompt_tokens"] == sum(len(x) for x in ids)
    one = _embed(daemon, ids[0]).json()["data"]
    assert len(one) == 1 and np.allclose(one[0]["embedding"], by_text[0], atol=1e-5)


def test_ids_outside_the_vocabulary_are_refused(daemon: Daemon) -> None:
    cases: list[list[list[int]]] = [[[1, 2, 10**6]], [[-1]], [[]]]
    for bad in cases:
        r = _embed(daemon, bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == "input", r.text


def test_a_long_id_input_is_truncated_like_text(daemon: Daemon, bert: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(bert)
    long = tok("word " * 2000)["input_ids"]
    r = _embed(daemon, [long])
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] < len(long)


def test_langchain_openai_embeddings_offline(daemon: Daemon, bert: Path) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    emb = langchain_openai.OpenAIEmbeddings(
        model="emb", base_url=daemon.http + "/v1", api_key="none", tiktoken_enabled=False,
        tiktoken_model_name=str(bert), max_retries=0,
    )  # fmt: skip
    vectors = emb.embed_documents(["the cat sat", "a dog ran in the park"])
    assert len(vectors) == 2 and len(vectors[0]) == len(emb.embed_query("the cat sat"))
    assert np.allclose(vectors[0], emb.embed_query("the cat sat"), atol=1e-5)
