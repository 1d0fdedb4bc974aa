"""Image and text embeddings with CLIP/SigLIP models, on ``/v1/embeddings`` (both doors).

Input items (``input`` is one item or a list of them; the shapes Infinity, Jina and vLLM's chat
parts use):

- a string: text;
- ``{"text": "..."}`` or ``{"type": "text", "text": "..."}``: text;
- ``{"image": "data:image/png;base64,..."}`` (or bare base64) or
  ``{"type": "image_url", "image_url": {"url": "data:..."}}``: an image.

Text and image vectors come out in input order, in the model's one space. http(s) image URLs
are refused unless ``image_fetch_urls`` is on (``hfd.daemon.image_fetch``: one GET, no
redirects, bounded like the rest).

Bounds, before decoding: the encoded bytes (``image_max_bytes``) and the pixel count read from
the header (``image_max_pixels``, which also becomes PIL's decompression-bomb limit for the
decode). Every refusal is a 400 on ``input``.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import TYPE_CHECKING, Any

import anyio
import numpy as np

from hfd.client.errors import InvalidRequest
from hfd.daemon import reqctx
from hfd.daemon.schema import EmbeddingRequest, parse_keep_alive

if TYPE_CHECKING:
    from hfd.daemon.media_worker import MediaScheduler
    from hfd.daemon.service import EmbeddingResult, Service
    from hfd.daemon.settings import Settings

TASK = "image-embed"


def has_images(req: EmbeddingRequest) -> bool:
    items = req.input if isinstance(req.input, list) else [req.input]
    return any(isinstance(item, dict) for item in items)


def items(req: EmbeddingRequest) -> list[tuple[str, str]]:
    """(kind, value) per input: ("text", text) or ("image", encoded source)."""
    raw = req.input if isinstance(req.input, list) else [req.input]
    if not raw:
        raise InvalidRequest("input must not be empty", param="input")
    out: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            out.append(("text", item))
            continue
        if not isinstance(item, dict):
            raise InvalidRequest("token-id input is not supported for image-text models", param=f"input.{i}")
        if isinstance(item.get("text"), str):
            out.append(("text", item["text"]))
        elif isinstance(item.get("image"), str):
            out.append(("image", item["image"]))
        elif item.get("type") == "image_url" and isinstance(item.get("image_url"), dict):
            url = item["image_url"].get("url")
            if not isinstance(url, str):
                raise InvalidRequest("image_url.url must be a string", param=f"input.{i}.image_url.url")
            out.append(("image", url))
        else:
            raise InvalidRequest(
                'an input item is a string, {"text": ...}, {"image": "data:..."} or '
                '{"type": "image_url", "image_url": {"url": ...}}',
                param=f"input.{i}",
            )
    return out


def image_bytes(source: str, settings: Settings, param: str) -> bytes:
    """The encoded image of a data: URL or bare base64; http(s) only when allowed."""
    if source.startswith(("http://", "https://")):
        if not settings.image_fetch_urls:
            raise InvalidRequest(
                "image URLs are not fetched by this daemon; send a data: URL or base64", param=param
            )
        from hfd.daemon.image_fetch import fetch

        return fetch(source, settings, param)
    payload = source
    if source.startswith("data:"):
        header, sep, payload = source.partition(",")
        if not sep or ";base64" not in header:
            raise InvalidRequest("a data: URL must be base64 (data:image/png;base64,...)", param=param)
    # base64 is 4/3 of the bytes: refuse before decoding what would be over the limit.
    if len(payload) * 3 // 4 > settings.image_max_bytes:
        raise InvalidRequest(
            f"the image is over the limit of {settings.image_max_bytes} bytes", param=param,
            details={"max_bytes": settings.image_max_bytes},
        )  # fmt: skip
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("the image is not valid base64", param=param) from None


def open_image(raw: bytes, max_pixels: int, param: str) -> Any:
    """An RGB PIL image; refuses what is not an image or has more than ``max_pixels``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as probe:  # reads the header only
            width, height = probe.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own check (a warning
        # above MAX_IMAGE_PIXELS, an error above twice it), set to the same limit by decode_image
        raise InvalidRequest(
            f"the image has more than {max_pixels} pixels, the limit",
            param=param,
            details={"max_pixels": max_pixels},
        ) from None
    except Exception:
        raise InvalidRequest(
            "the input is not an image PIL can read (png, jpeg, webp, gif, bmp)", param=param
        ) from None
    if width * height > max_pixels:
        raise InvalidRequest(
            f"the image is {width}x{height} pixels; the limit is {max_pixels} pixels", param=param,
            details={"pixels": width * height, "max_pixels": max_pixels},
        )  # fmt: skip
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            return img.convert("RGB")
    except Exception:
        raise InvalidRequest("the image cannot be decoded", param=param) from None


def decode_image(source: str, settings: Settings, param: str) -> Any:
    """The RGB PIL image of a data: URL or bare base64, within the settings' bounds (also used
    by vision chat, ``hfd.daemon.vision_chat``)."""
    from PIL import Image

    # PIL's own bomb check (it warns above the limit and raises above twice it) at our limit.
    Image.MAX_IMAGE_PIXELS = settings.image_max_pixels
    return open_image(image_bytes(source, settings, param), settings.image_max_pixels, param)


def _prepare(kinds: list[tuple[str, str]], settings: Settings) -> list[Any]:
    out: list[Any] = []
    for i, (kind, value) in enumerate(kinds):
        param = f"input.{i}" if len(kinds) > 1 else "input"
        if kind == "image":
            out.append(decode_image(value, settings, param))
        else:
            if value == "":
                raise InvalidRequest("input strings must not be empty", param=param)
            out.append(value)
    return out


def _compute(model: Any, inputs: list[Any]) -> tuple[np.ndarray, int]:
    """Vectors in input order: the texts in one batch, the images in another."""
    text_at = [i for i, x in enumerate(inputs) if isinstance(x, str)]
    image_at = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
    rows: dict[int, np.ndarray] = {}
    tokens = 0
    if text_at:
        texts = [inputs[i] for i in text_at]
        rows.update(zip(text_at, model.embed_texts(texts), strict=True))
        tokens = model.count_tokens(texts)
    if image_at:
        rows.update(zip(image_at, model.embed_images([inputs[i] for i in image_at]), strict=True))
    return np.stack([rows[i] for i in range(len(inputs))]).astype(np.float32), tokens


async def embed(service: Service, req: EmbeddingRequest) -> EmbeddingResult:
    from hfd.daemon.service import EmbeddingResult, _shorten

    settings = service.settings
    kinds = items(req)
    if len(kinds) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"{len(kinds)} inputs exceed the limit of {settings.max_inputs_per_request} per request",
            param="input",
        )
    keep_alive = parse_keep_alive(req.keep_alive)
    async with service.manager.acquire(req.model, keep_alive) as lm:
        if lm.task != TASK:
            raise InvalidRequest(
                f"model {lm.name!r} is a {lm.task} model; image inputs need an image-text model (CLIP, SigLIP)",
                param="model",
            )
        inputs = await anyio.to_thread.run_sync(_prepare, kinds, settings)
        scheduler: MediaScheduler = lm.scheduler  # type: ignore[assignment]
        vectors, tokens = await scheduler.run(_compute, lm.model, inputs)
    if req.dimensions is not None:
        vectors = _shorten(vectors, req.dimensions)
    reqctx.note_tokens(tokens)
    return EmbeddingResult(model=lm.name, vectors=vectors, prompt_tokens=tokens)
