"""Ollama's response bodies, built from hfd's results; hfd's own fields stay beside them, so
``/api/ps`` and ``/api/pull`` serve Ollama clients and hfd's alike."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from hfd.daemon.ollama.describe import describe
from hfd.daemon.ollama.names import to_ollama

# hfd's pull statuses as Ollama's progress texts (hfd's own status stays as ``phase``).
_PULL_STATUS: Final = {
    "resolving": "pulling manifest",
    "waiting": "waiting for another pull of this model",
    "placing": "writing manifest",
    "done": "verifying sha256 digest",
}


def timestamp(seconds: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama writes ``created_at`` and ``modified_at``."""
    when = datetime.fromtimestamp(time.time() if seconds is None else seconds, tz=timezone.utc)
    return when.isoformat().replace("+00:00", "Z")


def digest(name: str, commit: str | None) -> str:
    """A stable 64-hex digest for a model snapshot (Ollama's digests name its manifests; hfd's
    snapshots are named by repository and commit)."""
    return hashlib.sha256(f"{name}@{commit or ''}".encode()).hexdigest()


def ps_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One ``/api/ps`` row: hfd's ``LoadedModel.info`` plus Ollama's fields. ``expires_at``
    becomes Ollama's RFC 3339 time (null while in use or kept loaded)."""
    path = entry.get("path")
    facts = describe(path)
    size = int(entry.get("memory_bytes") or entry.get("memory_reserved_bytes") or 0)
    device = str(entry.get("device") or "cpu")
    expires = entry.get("expires_at")
    return {
        **entry,
        "model": to_ollama(str(entry["name"])),
        "size": size,
        "size_vram": 0 if device.lower().startswith("cpu") else size,
        "digest": digest(str(entry["name"]), Path(path).name if path else None),
        "details": facts["details"],
        "expires_at": None if expires is None else timestamp(float(expires)),
        "context_length": facts["model_info"].get(
            f"{facts['details'].get('family') or 'model'}.context_length"
        ),
    }


def pull_event(event: dict[str, Any]) -> dict[str, Any]:
    """A pull progress event in Ollama's shape (``status`` text, ``digest``, ``total``,
    ``completed``), with hfd's fields beside it and hfd's status as ``phase``."""
    phase = str(event.get("status", ""))
    out = {**event, "phase": phase}
    if phase == "downloading":
        what = event.get("file") or event.get("ref") or ""
        out["status"] = f"downloading {what}".strip()
        out["digest"] = str(what)
    else:
        out["status"] = _PULL_STATUS.get(phase, phase)
    return out


def tag_entry(
    name: str, path: Path | None, *, commit: str | None, size: int, modified: float | None
) -> dict[str, Any]:
    facts = describe(path)
    shown = to_ollama(name)
    return {
        "name": shown,
        "model": shown,
        "modified_at": timestamp(modified),
        "size": size,
        "digest": digest(name, commit),
        "details": facts["details"],
        "task": facts["task"],
    }


def capabilities(task: str | None, template: str) -> list[str]:
    if task == "embed":
        return ["embedding"]
    caps = ["completion"]
    if "tools" in template:
        caps.append("tools")
    return caps


def show(name: str, ref: str, path: Path, *, modified: float | None) -> dict[str, Any]:
    facts = describe(path)
    template = facts["template"]
    return {
        "modelfile": f"# hfd serves {ref}\nFROM {ref}\n",
        "parameters": "",
        "template": template,
        "license": "",
        "details": facts["details"],
        "model_info": facts["model_info"],
        "capabilities": capabilities(facts["task"], template),
        "modified_at": timestamp(modified),
        # hfd's additions
        "name": to_ollama(name),
        "ref": ref,
        "task": facts["task"],
    }


def chat_message(text: str, tools: Any = None) -> dict[str, Any]:
    """The assistant's message as Ollama gives it. With tools (``Generation.tools``, the chat
    request's ``hfd.daemon.tools.output.ToolOutput``) the text is read for calls, which become
    Ollama's ``tool_calls`` (``{"function": {"name", "arguments": {...}}}``: arguments an
    object, not OpenAI's JSON text)."""
    if tools is None:
        return {"role": "assistant", "content": text}
    message = tools.message(text)
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    calls = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments")
        try:
            parsed = json.loads(args) if isinstance(args, str) else (args or {})
        except ValueError:
            parsed = args
        calls.append({"function": {"name": fn.get("name", ""), "arguments": parsed}})
    if calls:
        out["tool_calls"] = calls
    return out
