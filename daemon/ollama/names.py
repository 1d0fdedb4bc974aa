"""Model names as Ollama clients send them, and the alias table ``/api/copy`` writes.

Ollama names are ``name[:tag]`` (``llama3:latest``). Hugging Face references are
``org/name[@revision]``, which cannot contain ``:``, so the mapping is lossless:

- ``org/name:latest`` (or no tag) is ``org/name``: the default revision;
- ``org/name:<tag>`` is ``org/name@<tag>`` (a branch, tag or commit), except that a GGUF
  quantization tag (``org/name:Q4_K_M``, as Ollama reads ``hf.co/org/name:Q4_K_M``) stays a tag:
  one GGUF file of the repository (``hfd.daemon.store.gguf_tags``, whose ``split_tag`` is the
  split used here);
- a configured model's name is used as is, with or without ``:latest``;
- ``ipfs://<cid>`` passes through untouched.

Names going out get the tag back: ``org/name`` is shown as ``org/name:latest`` and
``org/name@v2`` as ``org/name:v2``.

Aliases (``/api/copy``) live in ``<state_dir>/ollama-aliases.json``, ``{alias: target}``,
written atomically (a temporary file renamed over the old one), so a reader never sees half
a table. They resolve on the Ollama routes.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hfd._atomic_files import atomic_write_text
from hfd.client.errors import InvalidRequest
from hfd.daemon.store.gguf_tags import quant_tag, split_tag

if TYPE_CHECKING:
    from hfd.daemon.settings import Settings

log = logging.getLogger(__name__)

LATEST: Final = "latest"
ALIAS_FILE: Final = "ollama-aliases.json"


_untagged = split_tag  # ``name:tag`` -> (name, tag), one rule with the store's GGUF tags


def to_ref(name: str, configured: frozenset[str] = frozenset()) -> str:
    """The hfd reference an Ollama name stands for (see the module's doc)."""
    name = name.strip()
    if name in configured:
        return name
    base, tag = _untagged(name)
    if tag is None or tag == LATEST:
        return base
    if base in configured:
        raise InvalidRequest(
            f"model {base!r} is configured here without tags; use {base!r} or {base + ':latest'!r}",
            param="model",
        )
    if (quant := quant_tag(tag)) is not None:
        return f"{base}:{quant}"  # one GGUF file of the repository
    if "@" in base:
        raise InvalidRequest(f"model {name!r} has both a revision (@) and a tag (:)", param="model")
    return f"{base}@{tag}"


def to_ollama(ref: str) -> str:
    """How a reference is shown to Ollama clients: ``org/name:latest``, ``org/name:rev``."""
    if "://" in ref:
        return ref
    if "@" in ref:
        base, _, rev = ref.partition("@")
        return f"{base}:{rev}"
    if _untagged(ref)[1] is not None:
        return ref
    return f"{ref}:{LATEST}"


class Aliases:
    """The alias table of one state directory. Reads go to the file each time (it is small,
    and ``hfd`` commands or another daemon may have changed it); writes are atomic."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / ALIAS_FILE
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int], dict[str, str]] | None = None

    def table(self) -> dict[str, str]:
        # Every Ollama request resolves its name here: the file is read again only when it
        # changed (its modification time and size), and not at all while there is none.
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size)
        if self._cached is not None and self._cached[0] == stamp:
            return dict(self._cached[1])
        table = self._read()
        self._cached = (stamp, table)
        return dict(table)

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("alias table unreadable; ignored", extra={"path": str(self.path), "error": str(exc)})
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items() if isinstance(v, str)}

    def get(self, name: str) -> str | None:
        table = self.table()
        base, tag = _untagged(name.strip())
        for key in (name.strip(), base if tag == LATEST else None, f"{name.strip()}:{LATEST}"):
            if key is not None and key in table:
                return table[key]
        return None

    def set(self, alias: str, target: str) -> None:
        self._write({**self.table(), _key(alias): target})

    def remove(self, alias: str) -> bool:
        table = self.table()
        key = _key(alias)
        if key not in table:
            return False
        del table[key]
        self._write(table)
        return True

    def _write(self, table: dict[str, str]) -> None:
        with self._lock:
            atomic_write_text(self.path, json.dumps(table, indent=1, sort_keys=True), mode=0o600)


def _key(alias: str) -> str:
    """Aliases are stored without ``:latest`` (``mine:latest`` and ``mine`` are one alias)."""
    base, tag = _untagged(alias.strip())
    return base if tag == LATEST else alias.strip()


@functools.lru_cache(maxsize=16)
def aliases_for(state_dir: Path) -> Aliases:
    return Aliases(state_dir)


def resolve(settings: Settings, name: str) -> str:
    """The hfd reference for an Ollama name: an alias's target, a configured model's name, or
    a store reference (``org/name:tag`` -> ``org/name@tag``)."""
    target = aliases_for(settings.state_dir).get(name)
    if target is not None:
        name = target
    configured = frozenset(n for s in settings.models for n in (s.public_name, s.ref))
    return to_ref(name, configured)
