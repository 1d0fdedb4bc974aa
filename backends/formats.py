"""Weight file formats, by file suffix: the one list the store (what it accepts) and the engines
(what they refuse to unpickle) both read, so the two can never disagree about a file.

Only constants here: the store imports this without importing any engine.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Final

# Weights that are Python pickles: loading one can run arbitrary code from the file.
PICKLE_SUFFIXES: Final = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
# Weights that hold tensors only.
SAFE_SUFFIXES: Final = frozenset({".safetensors"})


def is_pickle(path: str | PurePath) -> bool:
    """Whether a file's format is a Python pickle (the suffix, in any case, decides)."""
    return PurePath(path).suffix.lower() in PICKLE_SUFFIXES
