"""Model references: what a name names, where its files are, what task it serves, and how
errors about it read to a client (without filesystem paths)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from hfd.backends.base import Task
from hfd.client.errors import ModelNotFound, ModelUnavailable
from hfd.daemon.settings import ModelSpec

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+(@[\w.\-/]+)?$")

# An absolute or home-relative path of two or more parts, not inside a word, URL or ref
# ("org/name", "torch/cpu" and "ipfs://cid" are left alone).
_PATH = re.compile(r"(?<![\w.:/~-])~?/[^\s'\"`,;()\[\]]+/[^\s'\"`,;()\[\]]*")


def is_store_ref(name: str) -> bool:
    """``org/name[@revision]`` or ``ipfs://<cid>``: a reference the store can resolve."""
    if name.startswith("ipfs://"):
        return len(name) > len("ipfs://") and "/" not in name[len("ipfs://") :]
    return bool(_REPO_ID.match(name)) and ".." not in name


def hide_paths(message: str) -> str:
    """``message`` with filesystem paths replaced by ``<path>``, for client-facing errors."""
    return _PATH.sub("<path>", message)


def detect_task(path: Path) -> Task:
    """generate for causal LMs, embed for encoders, from config.json's architectures."""
    # Paths go to the log only: client-facing messages must not disclose the filesystem.
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        log.warning("model directory has no config.json", extra={"path": str(path)})
        raise ModelUnavailable("the model's files have no config.json; is it a model directory?") from None
    except (OSError, ValueError) as exc:
        log.warning("cannot read the model's config.json", extra={"path": str(path), "error": str(exc)})
        raise ModelUnavailable(f"cannot read the model's config.json ({type(exc).__name__})") from exc
    archs = config.get("architectures") or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in archs):
        return "generate"
    return "embed"


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
