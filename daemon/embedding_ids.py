"""Token-id input for embeddings (``input`` a list of ints or a list of such lists): what
LangChain's ``OpenAIEmbeddings`` and vLLM clients send. The ids are the model's own vocabulary's;
they skip the tokenizer and go to the encoder's batches as they are, after the checks text gets:
ids outside the vocabulary are refused (400 ``input``), and an input longer than the model's
``max_length`` is truncated to it, as a text's tokens are.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from hfd.backends.base import TokenizedBatch
from hfd.client.errors import InvalidRequest

if TYPE_CHECKING:
    from hfd.daemon.schema import EmbeddingRequest
    from hfd.daemon.service import EmbeddingResult, Service


def token_ids(req: EmbeddingRequest) -> list[list[int]] | None:
    """The inputs as token-id lists, or None when the input is text."""
    inp: Any = req.input
    if isinstance(inp, str) or not inp or all(isinstance(x, str) for x in inp):
        return None
    if all(type(x) is int for x in inp):
        return [list(inp)]
    if all(isinstance(x, list) and all(type(t) is int for t in x) for x in inp):
        if any(not x for x in inp):
            raise InvalidRequest("token-id inputs must not be empty", param="input")
        return [list(x) for x in inp]
    raise InvalidRequest(
        "input must be text, a list of texts, token ids or a list of token-id lists", param="input"
    )


def _vocab_size(path: Any) -> int | None:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return None
    text = config.get("text_config") or config
    size = text.get("vocab_size")
    return int(size) if isinstance(size, int) and size > 0 else None


async def embed(service: Service, req: EmbeddingRequest, ids: list[list[int]]) -> EmbeddingResult:
    from hfd.daemon import reqctx
    from hfd.daemon.schema import parse_keep_alive
    from hfd.daemon.service import EmbeddingResult, _shorten

    limit = service.settings.max_inputs_per_request
    if len(ids) > limit:
        raise InvalidRequest(f"{len(ids)} inputs exceed the limit of {limit} per request", param="input")
    async with service.manager.acquire(req.model, parse_keep_alive(req.keep_alive)) as lm:
        if lm.task != "embed":
            raise InvalidRequest(
                f"model {lm.name!r} is a {lm.task} model, not an embedding model", param="model"
            )
        vocab = _vocab_size(lm.path)
        for i, row in enumerate(ids):
            if any(t < 0 or (vocab is not None and t >= vocab) for t in row):
                raise InvalidRequest(
                    f"input {i} has token ids outside this model's vocabulary [0, {vocab})", param="input"
                )
        max_length = int(getattr(lm.model, "max_length", 0) or 0)
        rows = [row[:max_length] if max_length else row for row in ids]
        result = await lm.encoder().run(TokenizedBatch(rows))
    vectors = np.stack(result.rows).astype(np.float32, copy=False)
    if req.dimensions is not None:
        vectors = _shorten(vectors, req.dimensions)
    reqctx.note_tokens(result.prompt_tokens)
    return EmbeddingResult(model=lm.name, vectors=vectors, prompt_tokens=result.prompt_tokens)
