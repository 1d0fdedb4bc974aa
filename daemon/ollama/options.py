"""Ollama's ``options`` and ``format`` as the fields of hfd's chat and completion requests.

Mapped: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``seed``, ``num_predict`` (->
``max_tokens``; -1 and -2, "no limit" and "fill the context", leave it unset), ``stop``,
``repeat_penalty``, ``presence_penalty``, ``frequency_penalty`` — each only where hfd's request
has the field; otherwise a value that would change sampling is refused (400) rather than
silently dropped, and the neutral value (``top_k`` 0, ``repeat_penalty`` 1, ...) is accepted.

Ignored, as pure runtime tuning that hfd decides itself: :data:`RUNTIME_OPTIONS`. Unknown
options are ignored too, as Ollama ignores them.

``format``: ``"json"`` -> ``response_format`` ``json_object``; a JSON schema ->
``json_schema``; where the request type has no ``response_format`` yet, 400.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from hfd.client.errors import InvalidRequest

RUNTIME_OPTIONS: Final = frozenset(
    {
        "numa", "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "logits_all", "vocab_only",
        "use_mmap", "use_mlock", "embedding_only", "num_thread", "num_keep", "f16_kv", "rope_frequency_base",
        "rope_frequency_scale",
    }
)  # fmt: skip

# option -> (the request field it maps to, the value that leaves sampling unchanged)
_SAMPLING: Final[dict[str, tuple[str, Any]]] = {
    "temperature": ("temperature", None),
    "top_p": ("top_p", 1.0),
    "top_k": ("top_k", 0),
    "min_p": ("min_p", 0.0),
    "seed": ("seed", None),
    "stop": ("stop", None),
    "repeat_penalty": ("repetition_penalty", 1.0),
    "presence_penalty": ("presence_penalty", 0.0),
    "frequency_penalty": ("frequency_penalty", 0.0),
}
# Sampling methods hfd does not have; accepted at their "off" value only.
_UNSUPPORTED: Final[dict[str, Any]] = {
    "tfs_z": 1.0,
    "typical_p": 1.0,
    "mirostat": 0,
    "mirostat_tau": None,
    "mirostat_eta": None,
    "repeat_last_n": None,  # only matters with a repeat penalty
    "penalize_newline": None,
}


def sampling_fields(options: dict[str, Any] | None, request: type[BaseModel]) -> dict[str, Any]:
    """The request fields for ``options`` (see the module's doc)."""
    if not options:
        return {}
    if not isinstance(options, dict):
        raise InvalidRequest("options must be an object", param="options")
    fields = request.model_fields
    out: dict[str, Any] = {}
    for name, value in options.items():
        if value is None or name in RUNTIME_OPTIONS:
            continue
        if name == "num_predict":
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequest("options.num_predict must be an integer", param="options.num_predict")
            if value > 0:
                out["max_tokens"] = value
            elif value == 0 or value < -2:
                raise InvalidRequest(
                    "options.num_predict must be positive, or -1 (no limit) or -2 (fill the context)",
                    param="options.num_predict",
                )
            continue
        if name in _SAMPLING:
            field, neutral = _SAMPLING[name]
            if field in fields:
                out[field] = value
            elif neutral is None or value != neutral:
                raise InvalidRequest(
                    f"option {name} is not supported by this daemon", param=f"options.{name}"
                )
            continue
        if name in _UNSUPPORTED:
            off = _UNSUPPORTED[name]
            if off is not None and value != off:
                raise InvalidRequest(f"option {name} is not supported", param=f"options.{name}")
            continue
        # Unknown options are ignored, as Ollama does.
    if "stop" in out and isinstance(out["stop"], list) and not out["stop"]:
        del out["stop"]
    return out


def response_format(fmt: Any, request: type[BaseModel]) -> dict[str, Any]:
    """``{"response_format": ...}`` for Ollama's ``format`` (empty when there is none)."""
    if fmt is None or fmt == "":
        return {}
    if fmt == "json":
        value: dict[str, Any] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        value = {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt, "strict": True}}
    else:
        raise InvalidRequest('format must be "json" or a JSON schema (an object)', param="format")
    if "response_format" not in request.model_fields:
        raise InvalidRequest("format is not supported yet", param="format")
    return {"response_format": value}
