"""Reading Hugging Face model directories, shared by every engine.

Only the standard library here (no torch, no transformers at module level): the OpenVINO and
ONNX Runtime engines use these helpers too, and importing them must stay cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hfd.backends import preload

# The suffix lists live in backends.formats (the store reads them too); re-exported here.
from hfd.backends.formats import PICKLE_SUFFIXES as PICKLE_SUFFIXES
from hfd.backends.formats import SAFE_SUFFIXES as SAFE_SUFFIXES
from hfd.backends.formats import is_pickle
from hfd.backends.gguf import refusal
from hfd.client.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger(__name__)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model directory; a clear error when it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"cannot read {path.name} in {path.parent}: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path} does not hold a JSON object")
    return data


def require_model_dir(path: Path) -> dict[str, Any]:
    """The model's ``config.json``; ``InvalidRequest`` when ``path`` is not a model directory."""
    if not path.is_dir():
        raise InvalidRequest(f"model path {path} is not a directory", param="path")
    config = path / "config.json"
    if not config.is_file():
        gguf = refusal(path)
        if gguf is not None:  # a GGUF repository without config.json: the openvino engine reads it
            raise ModelUnavailable(gguf)
        raise InvalidRequest(
            f"{path} is not a Hugging Face model directory: it has no config.json", param="path"
        )
    return read_json(config)


def _weight_files(path: Path) -> list[Path]:
    # Top level only: that is where transformers looks; sub-folders hold other modules' files.
    return sorted(p for p in path.iterdir() if p.is_file())


def pickled_weights(path: Path) -> list[Path]:
    """Files in a model directory whose format is a Python pickle."""
    return [p for p in _weight_files(path) if is_pickle(p)]


def safetensors_weights(path: Path) -> list[Path]:
    return [p for p in _weight_files(path) if p.suffix in SAFE_SUFFIXES]


def check_weights(path: Path, *, allow_pickle: bool) -> bool:
    """Decide how a model's weights may be loaded; returns ``use_safetensors``.

    Safetensors are always preferred. A directory with only pickled weights is refused unless
    ``allow_pickle`` (unpickling runs code from the file). A directory with neither is an error.
    """
    if safetensors_weights(path):
        return True
    pickled = pickled_weights(path)
    if pickled and not allow_pickle:
        names = ", ".join(p.name for p in pickled)
        raise InvalidRequest(
            f"{path} has only pickled weights ({names}); loading them can run arbitrary code. "
            "Convert them to safetensors, or allow pickle for this model explicitly.",
            param="allow_pickle",
            details={"files": [p.name for p in pickled]},
        )
    if pickled:
        log.warning("loading pickled weights", extra={"model_path": str(path)})
        return False
    gguf = refusal(path)
    if gguf is not None:  # served by the openvino engine (backends.gguf); the loader falls back to it
        raise ModelUnavailable(gguf)
    raise InvalidRequest(f"{path} has no weight files (*.safetensors)", param="path")


def fast_tokenizer(
    path: Path, *, trust_remote_code: bool, needed: str, gguf_file: str | None = None
) -> tuple[Any, Any]:
    """The snapshot's transformers tokenizer and a private copy of its Rust tokenizer (no padding;
    the caller sets truncation), or ``ModelUnavailable`` when it has none, or no fast one
    (``needed`` ends that message: who needs one). ``gguf_file``: the one transformers converts
    from that GGUF file's vocabulary (a snapshot without tokenizer files)."""
    preload.wait_for_transformers()
    try:
        from tokenizers import Tokenizer
        from transformers import AutoTokenizer

        hf_tokenizer = AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code,
            **({"gguf_file": gguf_file} if gguf_file else {}),
        )  # fmt: skip
    except Exception as exc:
        raise ModelUnavailable(f"cannot load the tokenizer of {path}: {exc}") from exc
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelUnavailable(f"{path} has no fast tokenizer (tokenizer.json); {needed}")
    # A private copy: transformers' wrapper re-configures the shared Rust object on calls.
    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    return hf_tokenizer, tokenizer


def model_config(path: Path, *, trust_remote_code: bool = False) -> Any:
    """The model's configuration as transformers reads it (``AutoConfig``), so fields are read
    under their common names whatever an architecture calls them in ``config.json``
    (DistilBERT's ``dim`` is ``hidden_size``). Imports transformers."""
    preload.wait_for_transformers()
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ModelUnavailable(f"transformers cannot read the config of {path}: {exc}") from exc


def config_int(config: Any, name: str) -> int:
    """An integer field of a transformers config (its text config for multimodal ones), 0 when
    it has none."""
    for source in (config, getattr(config, "get_text_config", lambda: None)()):
        value = getattr(source, name, None) if source is not None else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


# Families whose position ids start after the padding index (RoBERTa's scheme): the last
# pad_token_id + 1 position embeddings can never be reached (roberta-base: 514, 512 tokens).
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "mpnet", "data2vec-text", "ibert",
     "longformer", "luke", "roberta-prelayernorm", "xmod", "esm"}
)  # fmt: skip


def max_positions(config: Any) -> int:
    """The most tokens the model's position embeddings cover (0: no limit known)."""
    limit = config_int(config, "max_position_embeddings")
    if limit and getattr(config, "model_type", None) in _OFFSET_POSITIONS:
        pad = getattr(config, "pad_token_id", None)
        limit -= (pad if isinstance(pad, int) and pad >= 0 else 1) + 1
    return max(0, limit)


def eos_token_ids(path: Path, config: dict[str, Any]) -> set[int]:
    """End-of-sequence ids from ``config.json`` and ``generation_config.json`` (either may list
    several: chat models often end a turn with a token other than the tokenizer's eos)."""
    found: set[int] = set()
    sources = [config, config.get("text_config") or {}]
    gen = path / "generation_config.json"
    if gen.is_file():
        sources.append(read_json(gen))
    for source in sources:
        value = source.get("eos_token_id")
        if isinstance(value, int):
            found.add(value)
        elif isinstance(value, list):
            found.update(v for v in value if isinstance(v, int))
    return found


class PromptTokens:
    """Prompt ids for the generation engines that tokenise with the snapshot's own tokenizer, so
    every engine sees exactly the ids the model was trained with. Thread-safe: ``_tokenizer``
    is a frozen ``tokenizers.Tokenizer`` and the chat template only renders text."""

    _hf_tokenizer: Any  # the transformers tokenizer: it owns the chat template
    _tokenizer: Any  # a tokenizers.Tokenizer, safe to call from any thread

    @property
    def chat_template(self) -> str | dict[str, str] | None:
        """The tokenizer's template source (a dict of named templates for some models)."""
        return getattr(self._hf_tokenizer, "chat_template", None)

    def apply_chat_template(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> list[int]:
        if not getattr(self._hf_tokenizer, "chat_template", None):
            raise InvalidRequest("this model has no chat template; use a plain completion instead")
        try:
            text = self._hf_tokenizer.apply_chat_template(
                list(messages),
                tools=list(tools) if tools else None,
                tokenize=False,
                add_generation_prompt=True,
            )
        except Exception as exc:  # jinja2 errors, including the template's own raise_exception()
            raise InvalidRequest(
                f"the chat template rejected these messages: {exc}", param="messages"
            ) from exc
        # The rendered template carries its own special tokens (bos and turn markers).
        return _encode(self._tokenizer, str(text), special=False)

    def encode_prompt(self, text: str) -> list[int]:
        return _encode(self._tokenizer, text, special=True)

    def special_token_id(self, token: str) -> int | None:
        """The id of an added token of the tokenizer (``<fim_prefix>``), None when it has none."""
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    # encode_batch, not encode: only the batch call releases the GIL while the Rust tokenizer
    # runs (a 1 MB prompt holds it about 0.8 s otherwise, and both doors stall meanwhile).
    return list(tokenizer.encode_batch([text], add_special_tokens=special)[0].ids)
