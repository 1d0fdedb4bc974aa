"""What a snapshot's files say about its task, read without loading anything.

``Snapshot`` gathers the cheap facts once (config.json, or a GGUF file's architecture without
one, the README's YAML front matter, the sentence-transformers module list, processor files);
each task record's ``detect`` predicate reads them. ``hfd.daemon.tasks.registry.detect_task``
tries the records in their order.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfd.backends import gguf

log = logging.getLogger(__name__)

# The processor files that mark a model taking images or audio (read by media task records).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "feature_extractor_config.json")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)
_PIPELINE_TAG = re.compile(r"^pipeline_tag:\s*['\"]?([\w\-]+)['\"]?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Snapshot:
    """The facts about a model directory that detection reads."""

    config: dict[str, Any] = field(default_factory=dict)
    pipeline_tag: str | None = None
    st_modules: tuple[str, ...] = ()  # the module types of modules.json, in order
    processor_files: frozenset[str] = frozenset()
    has_config: bool = True
    config_error: str | None = None  # config.json exists but cannot be read (the error's type)
    # No config.json but a GGUF file: whether its metadata names a causal language model.
    gguf_causal: bool = False

    @property
    def architectures(self) -> tuple[str, ...]:
        archs = self.config.get("architectures") or ()
        return tuple(str(a) for a in archs) if isinstance(archs, list) else ()

    def has_head(self, *suffixes: str) -> bool:
        return any(a.endswith(suffixes) for a in self.architectures)

    @property
    def num_labels(self) -> int:
        """The head's output count as transformers reads it: ``id2label``'s size, else
        ``num_labels``, else 2 (PretrainedConfig's default)."""
        id2label = self.config.get("id2label")
        if isinstance(id2label, dict) and id2label:
            return len(id2label)
        n = self.config.get("num_labels")
        return n if isinstance(n, int) and n > 0 else 2

    @property
    def sentence_transformers_cross_encoder(self) -> bool:
        """sentence-transformers writes ``sentence_transformers.model_type`` = CrossEncoder
        (or ``sentence_transformers`` with an ``activation_fn``) into a cross-encoder's config."""
        st = self.config.get("sentence_transformers")
        return isinstance(st, dict) and (st.get("model_type") == "CrossEncoder" or "activation_fn" in st)


def read(path: Path) -> Snapshot:
    """The snapshot's facts; missing or unreadable files count as absent (never raises)."""
    config: dict[str, Any] = {}
    has_config = True
    error: str | None = None
    try:
        loaded = json.loads((path / "config.json").read_text())
        if isinstance(loaded, dict):
            config = loaded
    except FileNotFoundError:
        has_config = False
    except (OSError, ValueError) as exc:
        # Paths go to the log only: client-facing messages must not disclose the filesystem.
        log.warning("cannot read the model's config.json", extra={"path": str(path), "error": str(exc)})
        error = type(exc).__name__
    gguf_causal = False
    if not has_config and (served := gguf.model_file(path)) is not None:
        # A GGUF repository without config.json: the file's metadata stands for it.
        has_config = gguf_causal = gguf.causal(served)
    return Snapshot(
        config=config,
        pipeline_tag=pipeline_tag(path),
        st_modules=st_modules(path),
        processor_files=frozenset(f for f in PROCESSOR_FILES if (path / f).is_file()),
        has_config=has_config,
        config_error=error,
        gguf_causal=gguf_causal,
    )


def pipeline_tag(path: Path) -> str | None:
    """``pipeline_tag`` from README.md's YAML front matter (the Hub's model card metadata)."""
    try:
        with (path / "README.md").open(encoding="utf-8", errors="replace") as f:
            head = f.read(64 * 1024)  # front matter is at the top; a huge card is not read whole
    except OSError:
        return None
    match = _FRONT_MATTER.match(head)
    if match is None:
        return None
    tag = _PIPELINE_TAG.search(match.group(1))
    return tag.group(1) if tag else None


def st_modules(path: Path) -> tuple[str, ...]:
    """The ``type`` of each module in a sentence-transformers ``modules.json``."""
    try:
        modules = json.loads((path / "modules.json").read_text())
    except (OSError, ValueError):
        return ()
    if not isinstance(modules, list):
        return ()
    return tuple(str(m.get("type", "")) for m in modules if isinstance(m, dict))
