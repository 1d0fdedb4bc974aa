"""Image and text embeddings of a CLIP model through a real daemon: ``/v1/embeddings`` with
image items (data: URLs, bare base64, ``image_url`` parts) and text, over HTTP (raw and the
official ``openai`` client) and IPC, against transformers' ``get_image_features`` /
``get_text_features`` (cosine >= 0.999); concurrent requests equal one-at-a-time ones; bad
images are 400 with ``param`` and the daemon keeps serving."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from support import media_models
from support.daemon import Daemon
from support.daemon_fixtures import module_daemon

from hfd.client import Client

pytest.importorskip("torch")
openai = pytest.importorskip("openai")


daemon = module_daemon(
    {"clip": media_models.tiny_clip}, engine="torch", batching={"image_max_pixels": 250_000}
)


@pytest.fixture(scope="module")
def oracle() -> Any:
    import torch
    from PIL import Image
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel

    clip_dir = media_models.tiny_clip()
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tok = AutoTokenizer.from_pretrained(clip_dir)
    proc = CLIPImageProcessorPil.from_pretrained(clip_dir)

    def image(raw: bytes) -> np.ndarray:
        pil = Image.open(io.BytesIO(raw)).convert("RGB")
        with torch.inference_mode():
            return (
                model.get_image_features(pixel_values=proc(images=[pil], return_tensors="pt")["pixel_values"])
                .pooler_output[0]
                .numpy()
            )

    def text(s: str) -> np.ndarray:
        with torch.inference_mode():
            return model.get_text_features(**tok([s], return_tensors="pt")).pooler_output[0].numpy()

    return image, text


def _cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _embed(d: Daemon, inputs: Any) -> httpx.Response:
    return httpx.post(d.http + "/v1/embeddings", json={"model": "clip", "input": inputs}, timeout=120)


IMAGES = [media_models.png(seed=s, width=30 + 10 * s, height=40) for s in range(3)]


def test_images_and_texts_in_one_space(daemon: Daemon, oracle: Any) -> None:
    image, text = oracle
    inputs = [
        {"image": media_models.data_url(IMAGES[0])},
        "a photo of a cat",
        {"type": "image_url", "image_url": {"url": media_models.data_url(IMAGES[1])}},
        {"image": base64.b64encode(IMAGES[2]).decode()},
        {"text": "hola"},
    ]
    r = _embed(daemon, inputs)
    assert r.status_code == 200, r.text
    got = [row["embedding"] for row in r.json()["data"]]
    assert _cos(got[0], image(IMAGES[0])) >= 0.999
    assert _cos(got[2], image(IMAGES[1])) >= 0.999
    assert _cos(got[3], image(IMAGES[2])) >= 0.999
    np.testing.assert_allclose(got[1], text("a photo of a cat"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got[4], text("hola"), rtol=1e-4, atol=1e-5)


def test_openai_client_texts_and_images(daemon: Daemon, oracle: Any) -> None:
    image, text = oracle
    client = daemon.openai()
    got = client.embeddings.create(model="clip", input=["a photo of a dog"])
    np.testing.assert_allclose(got.data[0].embedding, text("a photo of a dog"), rtol=1e-4, atol=1e-5)
    got = client.embeddings.create(model="clip", input=[{"image": media_models.data_url(IMAGES[0])}])  # type: ignore[list-item]
    assert _cos(got.data[0].embedding, image(IMAGES[0])) >= 0.999


def test_ipc_client_images(daemon: Daemon, oracle: Any) -> None:
    image, _ = oracle
    with Client(daemon.ipc) as c:
        got = c.embeddings.create(model="clip", input=[{"image": media_models.data_url(IMAGES[1])}])  # type: ignore[list-item]
    vec = got.data[0].embedding if hasattr(got, "data") else got["data"][0]["embedding"]
    assert _cos(vec, image(IMAGES[1])) >= 0.999


def test_concurrent_requests_equal_one_at_a_time(daemon: Daemon) -> None:
    inputs = [[{"image": media_models.data_url(raw)}, "a cat"] for raw in IMAGES] * 3
    alone = [_embed(daemon, x).json()["data"] for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda x: _embed(daemon, x).json()["data"], inputs))
    for a, b in zip(alone, together, strict=True):
        for ra, rb in zip(a, b, strict=True):
            assert _cos(ra["embedding"], rb["embedding"]) >= 0.999999


@pytest.mark.parametrize(
    ("inputs", "param"),
    [
        ([{"image": media_models.data_url(b"not an image at all")}], "input"),
        ([{"image": "data:image/png;base64,@@@@"}], "input"),
        ([{"image": "https://example.com/cat.png"}], "input"),
        ([{"image": media_models.data_url(media_models.png(width=600, height=600))}], "input"),
        (["a cat", {"video": "x"}], "input.1"),
    ],
)
def test_bad_images_are_400_with_param(daemon: Daemon, inputs: Any, param: str) -> None:
    r = _embed(daemon, inputs)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert _embed(daemon, [{"image": media_models.data_url(IMAGES[0])}]).status_code == 200
