"""Model references: what a name names, where its files are, what task it serves, and how
errors about it read to a client (without filesystem paths)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from hfd.backends.base import Task
from hfd.client.errors import ModelNotFound
from hfd.daemon.settings import ModelSpec
from hfd.daemon.tasks import registry as task_registry

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?(:[\w\-]+)?$")  # :TAG: a GGUF file

# An absolute or home-relative path of two or more parts, not inside a word, URL or ref
# ("org/name", "torch/cpu" and "ipfs://cid" are left alone).
_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`,;()\[\]]+/[^\s'\"`,;()\[\]]*")


def is_store_ref(name: str) -> bool:
    """``org/name[@revision][:TAG]`` or ``ipfs://<cid>``: a reference the store can resolve."""
    if name.startswith("ipfs://"):
        return len(name) > len("ipfs://") and "/" not in name[len("ipfs://") :]
    return bool(_REPO_ID.match(name)) and ".." not in name


def hide_paths(message: str) -> str:
    """``message`` with filesystem paths replaced by ``<path>``, for client-facing errors."""
    return _PATH.sub("<path>", message)


def detect_task(path: Path) -> Task:
    """The model's task from its files (``hfd.daemon.tasks.registry`` has the rules)."""
    return task_registry.detect_task(path)


def resolve_local(spec: ModelSpec) -> Path:
    """A local directory, or a repo id already in the local Hugging Face cache. Errors name the
    model, not where it was looked for: paths go to the log, never to a client."""
    candidate = Path(spec.ref).expanduser()
    if candidate.is_dir():
        return candidate
    if spec.ref.count("/") == 1 and not spec.ref.startswith(("/", ".", "~")):
        repo, _, revision = spec.ref.partition("@")
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(repo, revision=revision or None, local_files_only=True))
        except Exception as exc:
            log.warning(
                "model is not in the local Hugging Face cache", extra={"model": spec.ref, "error": str(exc)}
            )
            raise ModelNotFound(
                f"model {spec.ref!r} is not in the local Hugging Face cache", param="model"
            ) from exc
    log.warning(
        "model reference is neither a directory nor org/name",
        extra={"model": spec.public_name, "ref": spec.ref},
    )
    raise ModelNotFound(
        f"model {spec.public_name!r} is not available: its files are missing (the daemon's log says where it looked)",
        param="model",
    )
