"""CLIP and SigLIP on torch against transformers' own ``get_text_features`` /
``get_image_features`` on the same inputs (the image processor applied by the oracle itself):
cosine >= 0.999 for images, equal text vectors; a request's inputs in one call equal each alone;
the image decoding bounds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import clip_oracle, media_models
from support.models import cosines

from hfd.backends.base import LoadOptions
from hfd.client.errors import InvalidRequest
from hfd.daemon import images
from hfd.daemon.settings import Settings

pytest.importorskip("torch")


@pytest.fixture(scope="module", params=["clip", "siglip"])
def case(request: pytest.FixtureRequest) -> tuple[Any, Any, Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    from hfd.backends import clip_torch

    path: Path = media_models.tiny_clip() if request.param == "clip" else media_models.tiny_siglip()
    engine = clip_torch.load(LoadOptions(path=path, task="embed", device="cpu"))
    model = AutoModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    return request.param, engine, model, tokenizer


TEXTS = ["a photo of a cat", "the weather today is sunny", "hola"]


def test_text_vectors_equal_get_text_features(case: Any) -> None:
    kind, engine, model, tokenizer = case
    expected = clip_oracle.text_features(model, tokenizer, kind, TEXTS, engine.max_length)
    got = engine.embed_texts(TEXTS)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_image_vectors_match_get_image_features(case: Any) -> None:
    kind, engine, model, _ = case
    raws = [media_models.png(seed=s, width=40 + 8 * s, height=36) for s in range(3)]
    expected = clip_oracle.image_features(model, kind, model.name_or_path, raws)
    settings = Settings()
    decoded = [images.open_image(images.image_bytes(media_models.data_url(r), settings, "input"), 10**6, "input")
               for r in raws]  # fmt: skip
    got = engine.embed_images(decoded)
    assert (cosines(got, expected) >= 0.999).all()
    # One request's images together equal each alone.
    alone = np.concatenate([engine.embed_images([img]) for img in decoded])
    assert (cosines(got, alone) >= 0.999).all()


def test_mixed_request_keeps_input_order(case: Any) -> None:
    _, engine, _, _ = case
    img = images.open_image(media_models.png(seed=7), 10**6, "input")
    vectors, tokens = images._compute(engine, ["a photo of a cat", img, "hola"])
    assert vectors.shape[0] == 3 and tokens > 0
    np.testing.assert_allclose(vectors[0], engine.embed_texts(["a photo of a cat"])[0], rtol=1e-5, atol=1e-5)
    assert cosines(vectors[1], engine.embed_images([img])[0]) >= 0.999


def test_image_bounds() -> None:
    settings = Settings()
    with pytest.raises(InvalidRequest) as e:
        images.open_image(b"not an image", 10**6, "input.0")
    assert e.value.param == "input.0"
    with pytest.raises(InvalidRequest, match="pixels"):
        images.open_image(media_models.png(width=200, height=200), 100 * 100, "input")
    with pytest.raises(InvalidRequest, match="not fetched"):
        images.image_bytes("https://example.com/cat.png", settings, "input")
    with pytest.raises(InvalidRequest, match="base64"):
        images.image_bytes("data:image/png;base64,@@@", settings, "input")
