"""Model families an engine cannot serve with the versions installed, and why — known before
any export is tried.

Exporting a model that the exporter refuses costs tens of seconds (the exporter loads the whole
model first) and fails the same way every time. So the policy skips such an engine at once
(``policy.skip_unsupported``) and the engine's load refuses with the reason before exporting
(``check``). Keyed by engine, task and transformers' ``model_type`` (from ``config.json``).

The table is written for the pinned exporter (optimum-intel 2.2.0, see
``requirements/constraints.txt``). A cap on the transformers version is checked against the
installed transformers, so an install with an older transformers still exports those families.
``tests/integration/test_causal_matrix.py`` checks the table against optimum-intel's own export
configs, so it cannot drift from what the exporter really does; an entry marked ``measured``
is one the exporter accepts but whose output was wrong, and its test fails once it is right. Reading it imports nothing
heavy: the daemon consults it on every load.
"""

from __future__ import annotations

import importlib.metadata
import json
from dataclasses import dataclass
from pathlib import Path

from hfd.client.errors import ModelUnavailable

OPTIMUM_INTEL = "optimum-intel 2.2.0"


@dataclass(frozen=True)
class Gap:
    what: str  # the family, as people call it
    reason: str  # why the engine cannot serve it
    above: str | None = None  # applies only when the installed transformers is newer than this
    measured: bool = False  # the exporter accepts it, but the served text was seen to be wrong

    def applies(self) -> bool:
        if self.above is None:
            return True
        installed = _transformers_version()
        return installed is not None and _newer(installed, self.above)


def _capped(what: str, most: str) -> Gap:
    return Gap(what, f"{OPTIMUM_INTEL} exports {what} only with transformers <= {most}", above=most)


def _no_exporter(what: str) -> Gap:
    return Gap(what, f"{OPTIMUM_INTEL} has no OpenVINO export for {what}")


# engine -> task -> model_type -> gap
GAPS: dict[str, dict[str, dict[str, Gap]]] = {
    "openvino": {
        "generate": {
            "gemma": _capped("Gemma", "5.0"),
            "gemma2": _capped("Gemma 2", "5.0"),
            "gemma3_text": _capped("Gemma 3", "5.0"),
            "gemma3": Gap("Gemma 3", f"{OPTIMUM_INTEL} exports Gemma 3 only as image-text-to-text"),
            "mamba": _capped("Mamba", "5.3.0"),
            "falcon_mamba": _capped("Falcon Mamba", "5.3.0"),
            "lfm2": _capped("LFM2", "5.4.0"),
            "lfm2_moe": _capped("LFM2-MoE", "5.4.0"),
            "zamba2": _capped("Zamba 2", "4.57.6"),
            "qwen3_next": _capped("Qwen3-Next", "4.57.6"),
            "mamba2": _no_exporter("Mamba-2"),
            "jamba": _no_exporter("Jamba"),
            "falcon_h1": _no_exporter("Falcon-H1"),
            "bamba": _no_exporter("Bamba"),
            "nemotron_h": _no_exporter("Nemotron-H"),
            # Exports and runs, but greedy text leaves transformers' fp32 text after 2-5 tokens
            # (f32 hint, OpenVINO GenAI 2026.4.1; transformers agrees with itself with and
            # without its cache): a wrong answer is worse than the slower engine.
            "granitemoehybrid": Gap(
                "Granite 4 (GraniteMoeHybrid)",
                "OpenVINO GenAI 2026.4.1's greedy text for GraniteMoeHybrid differs from transformers' fp32",
                measured=True,
            ),
        },
        "embed": {
            "modernbert": _no_exporter("ModernBERT"),
        },
    },
}


def gap(engine: str, task: str, model_type: str | None) -> str | None:
    """Why ``engine`` cannot serve ``task`` for this ``model_type`` here; None when it can (as
    far as is known)."""
    if not model_type:
        return None
    found = GAPS.get(engine, {}).get(task, {}).get(model_type)
    if found is None or not found.applies():
        return None
    return found.reason


def model_type(path: Path) -> str | None:
    """The ``model_type`` of a snapshot directory's ``config.json``; None if unreadable."""
    try:
        data = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = data.get("model_type") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def check(engine: str, task: str, path: Path, config: dict[str, object] | None = None) -> None:
    """Raise ``ModelUnavailable`` with the reason when ``engine`` cannot serve this model."""
    kind = config.get("model_type") if config is not None else model_type(path)
    reason = gap(engine, task, kind if isinstance(kind, str) else None)
    if reason is not None:
        raise ModelUnavailable(
            f"the {engine} engine cannot serve {path.name} ({kind}): {reason}",
            details={"engine": engine, "model_type": kind, "reason": reason},
        )


def _transformers_version() -> str | None:
    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return None


def _newer(version: str, than: str) -> bool:
    from packaging.version import Version

    return Version(version) > Version(than)
