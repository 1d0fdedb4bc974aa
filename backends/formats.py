"""Weight file formats, by file suffix: the one list the store (what it accepts) and the engines
(what they refuse to unpickle) both read, so the two can never disagree about a file; and
``file_stats``, what says that a model folder changed (the daemon's response cache and engine
records, the engines' tokenizer records).

Only the standard library here: the store imports this without importing any engine.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path, PurePath
from typing import Final

# Weights that are Python pickles: loading one can run arbitrary code from the file.
PICKLE_SUFFIXES: Final = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
# Weights that hold tensors only.
SAFE_SUFFIXES: Final = frozenset({".safetensors"})
# Files that hold weights in any format (the store tells "only pickled weights" apart with it).
WEIGHT_SUFFIXES: Final = PICKLE_SUFFIXES | SAFE_SUFFIXES | {".onnx", ".gguf", ".h5", ".msgpack", ".xml"}


def is_pickle(path: str | PurePath) -> bool:
    """Whether a file's format is a Python pickle (the suffix, in any case, decides)."""
    return PurePath(path).suffix.lower() in PICKLE_SUFFIXES


def file_stats(path: Path, *, skip_suffixes: Collection[str] = ()) -> list[tuple[str, int, int]]:
    """``(relative path, size, mtime in ns)`` of every file below ``path``, sorted, symlinks
    followed (the Hugging Face cache layout links snapshots to blobs), hidden folders skipped,
    and files whose suffix (lower case) is in ``skip_suffixes`` (a reader of a model's small
    files needs not stat its weights)."""
    files: list[tuple[str, int, int]] = []
    for root, dirs, names in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            full = Path(root) / name
            if full.suffix.lower() in skip_suffixes:
                continue
            try:
                st = full.stat()
            except OSError:
                continue
            files.append((str(full.relative_to(path)), st.st_size, st.st_mtime_ns))
    return files
