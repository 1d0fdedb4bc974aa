"""What a sentence-transformers folder says happens after the transformer: pooling, Dense
projections and normalisation, read from ``modules.json`` and each module's folder.

Both layouts sentence-transformers has written are understood:

- before 6.0: module types ``sentence_transformers.models.Pooling`` (``.Dense``, ``.Normalize``),
  pooling config ``word_embedding_dimension`` and one boolean flag per mode
  (``pooling_mode_mean_tokens`` ...), concatenated in a fixed order;
- 6.x: ``sentence_transformers.base.modules.dense.Dense``,
  ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` ..., pooling config
  ``embedding_dimension`` and ``pooling_mode`` (one name, or a list concatenated in its order).

A module this daemon cannot reproduce (an LSTM, a router, a Transformer in a sub-folder ...) is
refused with ``InvalidRequest``: skipping it would return wrong embeddings. Engines apply the
result in ``numpy_encoder.pool`` and ``torch_encoder.pool``.

numpy (and safetensors, for Dense weights) is imported only when a folder has a Dense module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfd.backends._hf import read_json
from hfd.client.errors import InvalidRequest

log = logging.getLogger(__name__)

POOLING_MODES = ("cls", "mean", "max", "mean_sqrt_len", "weightedmean", "lasttoken")
# The pre-6.0 flags, in the order sentence-transformers concatenates the modes they enable.
_LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_MODE_ALIASES = {
    "cls_token": "cls",
    "mean_tokens": "mean",
    "max_tokens": "max",
    "mean_sqrt_len_tokens": "mean_sqrt_len",
    "weightedmean_tokens": "weightedmean",
    "last_token": "lasttoken",
}
# torch.nn activation classes a Dense module may name, by class name (the module path differs
# between torch releases: torch.nn.modules.activation.Tanh, torch.nn.Tanh ...).
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU")
_SENTENCE_EMBEDDING = "sentence_embedding"


@dataclass(frozen=True, eq=False)
class Dense:
    """``activation(x @ weight.T + bias)`` (+ ``x`` or ``x @ residual.T`` when it has a residual)."""

    in_features: int
    out_features: int
    activation: str  # one of ACTIVATIONS
    weight: Any  # numpy float32 [out, in]
    bias: Any | None  # numpy float32 [out]
    residual: Any | None = None  # numpy float32 [out, in], when the residual is projected
    use_residual: bool = False


@dataclass(frozen=True)
class Normalize:
    """L2 normalisation of the sentence embedding."""


@dataclass(frozen=True)
class PoolingConfig:
    """How token embeddings become one sentence embedding (sentence-transformers semantics)."""

    modes: tuple[str, ...] = ("mean",)  # concatenated in this order
    word_embedding_dimension: int | None = None
    include_prompt: bool = True  # only matters with prompts, which hfd does not prepend
    max_seq_length: int | None = None
    lowercase: bool = False  # sentence_bert_config's do_lower_case: texts are lower-cased first
    # What follows the pooling, in the folder's order.
    steps: tuple[Dense | Normalize, ...] = field(default=())
    # True when the directory says how to pool; False: the mean-pooling fallback.
    from_config: bool = False

    @property
    def dimensions_factor(self) -> int:
        return len(self.modes)

    @property
    def normalize(self) -> bool:
        return any(isinstance(s, Normalize) for s in self.steps)

    @property
    def describe(self) -> str:
        parts = ["+".join(self.modes)]
        for step in self.steps:
            parts.append(
                f"dense({step.out_features},{step.activation})" if isinstance(step, Dense) else "normalize"
            )
        return " -> ".join(parts)

    def output_dimensions(self, hidden: int) -> int:
        """The sentence embedding's size for a transformer of width ``hidden``."""
        width = int(self.word_embedding_dimension or hidden) * len(self.modes)
        for step in self.steps:
            if isinstance(step, Dense):
                if step.in_features != width:
                    raise InvalidRequest(
                        f"a Dense module takes {step.in_features} features but the pooling gives {width}"
                    )
                width = step.out_features
        return width


def read_pooling_config(path: Path) -> PoolingConfig:
    """The folder's pipeline after the transformer; plain mean pooling without ``modules.json``."""
    st_config = _sentence_bert_config(path)
    max_seq_length = st_config.get("max_seq_length")
    common: dict[str, Any] = {
        "max_seq_length": int(max_seq_length)
        if isinstance(max_seq_length, int) and max_seq_length > 0
        else None,
        "lowercase": bool(st_config.get("do_lower_case", False)),
    }
    _warn_default_prompt(path)
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return PoolingConfig(**common)
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"cannot read modules.json in {path}: {exc}") from exc
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InvalidRequest(f"{modules_file} is not a list of modules")

    pooling: dict[str, Any] | None = None
    steps: list[Dense | Normalize] = []
    for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = module_kind(str(module.get("type", "")))
        folder = path / str(module.get("path", ""))
        if kind == "Transformer":
            if folder.resolve() != path.resolve():
                raise InvalidRequest(
                    f"{path}: the transformer is in the sub-folder {module.get('path')!r}; "
                    "hfd loads the model from the folder's top level",
                    details={"module": str(module.get("type"))},
                )
        elif kind == "Pooling" and pooling is None and not steps:
            pooling = read_json(folder / "config.json")
        elif kind == "Normalize":
            _require_sentence_embedding(_module_config(folder), module, path)
            steps.append(Normalize())
        elif kind == "Dense" and (pooling is not None):
            steps.append(_read_dense(folder, module, path))
        else:
            raise InvalidRequest(
                f"{path} uses the sentence-transformers module {module.get('type')!r}"
                + (" here" if kind in ("Pooling", "Dense") else "")
                + ", which hfd cannot reproduce",
                details={"module": str(module.get("type"))},
            )
    if pooling is None:
        return PoolingConfig(steps=tuple(steps), from_config=True, **common)
    dimension = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    return PoolingConfig(
        modes=_pooling_modes(pooling, path),
        word_embedding_dimension=int(dimension) if isinstance(dimension, int) else None,
        include_prompt=bool(pooling.get("include_prompt", True)),
        steps=tuple(steps),
        from_config=True,
        **common,
    )


def module_kind(type_name: str) -> str | None:
    """``Transformer``, ``Pooling``, ``Dense``, ``Normalize`` or None, for a module type of either
    layout (``sentence_transformers.models.Pooling``,
    ``sentence_transformers.sentence_transformer.modules.pooling.Pooling`` ...)."""
    if not type_name.startswith("sentence_transformers."):
        return None
    name = type_name.rsplit(".", 1)[-1]
    return name if name in ("Transformer", "Pooling", "Dense", "Normalize") else None


def _pooling_modes(pooling: dict[str, Any], path: Path) -> tuple[str, ...]:
    value = pooling.get("pooling_mode")
    if isinstance(value, str):
        return (_canonical_mode(value, path),)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(_canonical_mode(v, path) for v in value)
    flags = [key for key in _LEGACY_FLAGS if key in pooling]
    if not flags:
        return ("mean",)  # sentence-transformers' default
    modes = tuple(_LEGACY_FLAGS[key] for key in flags if pooling.get(key))
    if not modes:
        raise InvalidRequest(f"{path}: the pooling config enables no pooling mode")
    # sentence-transformers concatenates in the fixed order of its flags.
    return tuple(m for m in _LEGACY_FLAGS.values() if m in modes)


def _canonical_mode(name: str, path: Path) -> str:
    mode = _MODE_ALIASES.get(name, name)
    if mode not in POOLING_MODES:
        raise InvalidRequest(f"{path}: unknown pooling mode {name!r}")
    return mode


def _sentence_bert_config(path: Path) -> dict[str, Any]:
    config = path / "sentence_bert_config.json"
    return read_json(config) if config.is_file() else {}


def _warn_default_prompt(path: Path) -> None:
    """sentence-transformers' ``encode()`` prepends a folder's default prompt to every text;
    hfd embeds texts as they are sent (a client that wants the prompt sends it)."""
    config = path / "config_sentence_transformers.json"
    if not config.is_file():
        return
    data = read_json(config)
    name = data.get("default_prompt_name")
    prompts = data.get("prompts")
    prompt = prompts.get(name) if isinstance(prompts, dict) and isinstance(name, str) else None
    if prompt:
        log.warning(
            "default prompt not applied: texts are embedded as sent",
            extra={"model_path": str(path), "prompt_name": name, "prompt": str(prompt)[:80]},
        )


def _module_config(folder: Path) -> dict[str, Any]:
    config = folder / "config.json"
    return read_json(config) if config.is_file() else {}


def _require_sentence_embedding(config: dict[str, Any], module: dict[str, Any], path: Path) -> None:
    for key in ("module_input_name", "module_output_name"):
        value = config.get(key, _SENTENCE_EMBEDDING)
        if value not in (None, _SENTENCE_EMBEDDING):
            raise InvalidRequest(
                f"{path}: the module {module.get('path')!r} works on {value!r}, not the sentence "
                "embedding; hfd cannot reproduce it",
                details={"module": str(module.get("type"))},
            )


def _read_dense(folder: Path, module: dict[str, Any], path: Path) -> Dense:
    config = read_json(folder / "config.json")
    _require_sentence_embedding(config, module, path)
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"{folder}/config.json: a Dense module needs in_features and out_features"
        ) from exc
    # sentence-transformers' default activation is Tanh; configs name the torch class.
    activation = str(config.get("activation_function") or "torch.nn.modules.activation.Tanh")
    short = activation.rsplit(".", 1)[-1]
    if not activation.startswith("torch.") or short not in ACTIVATIONS:
        raise InvalidRequest(
            f"{folder}: the Dense activation {activation!r} is not supported; hfd knows "
            f"{', '.join(ACTIVATIONS)}",
            details={"module": str(module.get("type")), "activation": activation},
        )
    weights = _dense_weights(folder)
    use_residual = bool(config.get("use_residual", False))
    weight = weights.get("linear.weight")
    bias = weights.get("linear.bias")
    residual = weights.get("residual.weight")
    if weight is None or tuple(weight.shape) != (out_features, in_features):
        raise InvalidRequest(f"{folder}: linear.weight is missing or not [{out_features}, {in_features}]")
    if bool(config.get("bias", True)) and bias is None:
        raise InvalidRequest(f"{folder}: linear.bias is missing")
    if use_residual and in_features != out_features and residual is None:
        raise InvalidRequest(f"{folder}: residual.weight is missing")
    return Dense(
        in_features=in_features,
        out_features=out_features,
        activation=short,
        weight=weight,
        bias=bias if bool(config.get("bias", True)) else None,
        residual=residual if use_residual and in_features != out_features else None,
        use_residual=use_residual,
    )


def _dense_weights(folder: Path) -> dict[str, Any]:
    file = folder / "model.safetensors"
    if not file.is_file():
        pickled = [p.name for p in folder.glob("*.bin")]
        raise InvalidRequest(
            f"{folder} has no model.safetensors"
            + (f" (only the pickled {', '.join(pickled)}: convert it to safetensors)" if pickled else ""),
            details={"files": pickled},
        )
    import numpy as np
    from safetensors.numpy import load_file

    try:
        return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in load_file(str(file)).items()}
    except Exception as exc:
        raise InvalidRequest(f"cannot read {file}: {exc}") from exc
