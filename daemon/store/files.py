"""The files of a local model directory and their size (the crash-safe writes the store uses are
``hfd._atomic_files``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def model_files(root: Path) -> Iterator[Path]:
    """Regular files of a local model directory, skipping hidden entries (.git, .cache)."""
    for dirpath, dirnames, names in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                path = Path(dirpath) / name
                if path.is_file():
                    yield path
