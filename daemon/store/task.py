"""What a stored model is for, read from its files (shown by ``hfd show``); the rules are the
task registry's (``hfd.daemon.tasks.registry``), so the store and the manager agree."""

from __future__ import annotations

from pathlib import Path

from hfd.daemon.tasks.registry import guess_task as _guess


def guess_task(model_dir: Path) -> str | None:
    """The task the model's files say (``generate``, ``embed``, ``rerank`` ...); None when they
    do not say."""
    return _guess(model_dir)
