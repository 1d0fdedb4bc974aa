"""Reading Hugging Face model directories, shared by every engine.

Only the standard library here (no torch, no transformers at module level): the OpenVINO and
ONNX Runtime engines use these helpers too, and importing them must stay cheap.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfd.client.errors import InvalidRequest

log = logging.getLogger(__name__)

# Weight formats that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
SAFE_SUFFIXES = (".safetensors",)

# sentence-transformers module types that these helpers understand.
_ST_TRANSFORMER = "sentence_transformers.models.Transformer"
_ST_POOLING = "sentence_transformers.models.Pooling"
_ST_NORMALIZE = "sentence_transformers.models.Normalize"

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")


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
        raise InvalidRequest(
            f"{path} is not a Hugging Face model directory: it has no config.json", param="path"
        )
    return read_json(config)


def _weight_files(path: Path) -> list[Path]:
    # Top level only: that is where transformers looks; sub-folders hold other modules' files.
    return sorted(p for p in path.iterdir() if p.is_file())


def pickled_weights(path: Path) -> list[Path]:
    """Files in a model directory whose format is a Python pickle."""
    return [p for p in _weight_files(path) if p.suffix in PICKLE_SUFFIXES]


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
    raise InvalidRequest(f"{path} has no weight files (*.safetensors)", param="path")


@dataclass(frozen=True)
class PoolingConfig:
    """How token embeddings become one sentence embedding (sentence-transformers semantics)."""

    modes: tuple[str, ...] = ("mean",)  # concatenated in this order, as sentence-transformers does
    normalize: bool = False
    word_embedding_dimension: int | None = None
    include_prompt: bool = True
    max_seq_length: int | None = None
    # True when the directory says how to pool; False: the mean-pooling fallback.
    from_config: bool = False

    @property
    def dimensions_factor(self) -> int:
        return len(self.modes)


def read_pooling_config(path: Path) -> PoolingConfig:
    """Pooling as the directory's sentence-transformers config says, else plain mean pooling.

    Raises ``InvalidRequest`` for a pipeline with a module this daemon cannot reproduce (a Dense
    projection, say): silently skipping it would return wrong embeddings.
    """
    modules_file = path / "modules.json"
    max_seq_length = _max_seq_length(path)
    if not modules_file.is_file():
        return PoolingConfig(max_seq_length=max_seq_length)
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"cannot read modules.json in {path}: {exc}") from exc
    if not isinstance(modules, list):
        raise InvalidRequest(f"{modules_file} is not a list of modules")

    pooling: dict[str, Any] | None = None
    normalize = False
    for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = str(module.get("type", ""))
        if kind == _ST_TRANSFORMER:
            continue
        if kind == _ST_POOLING:
            pooling = read_json(path / str(module.get("path", "")) / "config.json")
        elif kind == _ST_NORMALIZE:
            normalize = True
        else:
            raise InvalidRequest(
                f"{path} uses the sentence-transformers module {kind!r}, which is not supported",
                details={"module": kind},
            )
    if pooling is None:
        return PoolingConfig(normalize=normalize, max_seq_length=max_seq_length, from_config=True)
    return PoolingConfig(
        modes=_pooling_modes(pooling, path),
        normalize=normalize,
        word_embedding_dimension=pooling.get("word_embedding_dimension"),
        include_prompt=bool(pooling.get("include_prompt", True)),
        max_seq_length=max_seq_length,
        from_config=True,
    )


def _pooling_modes(pooling: dict[str, Any], path: Path) -> tuple[str, ...]:
    # Newer configs name one mode; older ones set one boolean flag per mode.
    if isinstance(pooling.get("pooling_mode"), str):
        modes: tuple[str, ...] = (_canonical_mode(pooling["pooling_mode"], path),)
    else:
        flags = {
            "cls": "pooling_mode_cls_token",
            "max": "pooling_mode_max_tokens",
            "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens",
            "lasttoken": "pooling_mode_lasttoken",
        }
        # sentence-transformers concatenates in this fixed order.
        modes = tuple(mode for mode, key in flags.items() if pooling.get(key))
    if not modes:
        raise InvalidRequest(f"{path}: the pooling config enables no pooling mode")
    return modes


def _canonical_mode(name: str, path: Path) -> str:
    aliases = {
        "cls_token": "cls",
        "mean_tokens": "mean",
        "max_tokens": "max",
        "mean_sqrt_len_tokens": "mean_sqrt_len",
    }
    mode = aliases.get(name, name)
    if mode not in POOLING_MODES:
        raise InvalidRequest(f"{path}: unknown pooling mode {name!r}")
    return mode


def _max_seq_length(path: Path) -> int | None:
    config = path / "sentence_bert_config.json"
    if not config.is_file():
        return None
    value = read_json(config).get("max_seq_length")
    return int(value) if isinstance(value, int) and value > 0 else None


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

    def apply_chat_template(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        if not getattr(self._hf_tokenizer, "chat_template", None):
            raise InvalidRequest("this model has no chat template; use a plain completion instead")
        try:
            text = self._hf_tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # jinja2 errors, including the template's own raise_exception()
            raise InvalidRequest(
                f"the chat template rejected these messages: {exc}", param="messages"
            ) from exc
        # The rendered template carries its own special tokens (bos and turn markers).
        return _encode(self._tokenizer, str(text), special=False)

    def encode_prompt(self, text: str) -> list[int]:
        return _encode(self._tokenizer, text, special=True)


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    # encode_batch, not encode: only the batch call releases the GIL while the Rust tokenizer
    # runs (a 1 MB prompt holds it about 0.8 s otherwise, and both doors stall meanwhile).
    return list(tokenizer.encode_batch([text], add_special_tokens=special)[0].ids)
