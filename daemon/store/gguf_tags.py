"""GGUF quantization tags: ``org/name:Q4_K_M`` names one GGUF file of a repository with many.

The tag is written after the name as an Ollama tag is (``name:tag``; ``hfd.daemon.ollama.names``
splits both with ``split_tag``) and compared case-insensitively, as the Hub and Ollama do
(``:q8_0`` is ``:Q8_0``). A tag names the files whose name ends in it after a ``-``, ``.`` or
``_`` (``Llama-3.2-1B-Q4_K_M.gguf``, ``model.q8_0.gguf``, the shards of
``model-Q4_K_M-00001-of-00002.gguf``); vision projectors (``mmproj-*``) are never a tag's file.
A tagged pull keeps those files and the repository's files that are not weights (config,
tokenizer, generation config, README), and records its snapshot under the revision
``<revision>:<TAG>`` (``refs/main:Q4_K_M``), so an untagged reference never takes that partial
snapshot for the whole repository.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Final

from hfd.backends.gguf import SUFFIX, is_projector
from hfd.client.errors import ModelNotFound

# llama.cpp's file types (Q4_K_M, IQ2_XXS, TQ1_0, Q4_0_4_4, F16, BF16, MXFP4 ...) and the
# variants publishers add (Q3_K_XL, unsloth's UD-Q4_K_XL). Branch names such as "v2" do not match.
QUANT_TAG: Final = re.compile(
    r"^(?:UD-)?(?:(?:I|T)?Q[1-8](?:_[0-9A-Z]{1,4}){1,3}|F16|F32|F64|BF16|MXFP4(?:_MOE)?)$", re.IGNORECASE
)
_SHARD: Final = re.compile(r"-\d{5}-of-\d{5}$")
_SEPARATORS: Final = "-._"


def split_tag(name: str) -> tuple[str, str | None]:
    """``name:tag`` -> (name, tag); a name without a tag (or a URL) -> (name, None)."""
    if "://" in name:
        return name, None
    base, sep, tag = name.rpartition(":")
    if not sep or not base or "/" in tag:
        return name, None
    return base, tag


def quant_tag(tag: str | None) -> str | None:
    """The tag in its usual spelling (upper case) when it names a GGUF quantization, else None."""
    return tag.upper() if tag and QUANT_TAG.match(tag) else None


def file_tag(path: str) -> str | None:
    """The quantization tag a GGUF file's name ends in (upper case), None when it has none."""
    name = PurePosixPath(path).name
    if not name.lower().endswith(SUFFIX) or is_projector(name):
        return None
    stem = _SHARD.sub("", name[: -len(SUFFIX)])
    for i, char in enumerate(stem):  # the longest suffix after a separator that is a tag
        if char in _SEPARATORS and (tag := quant_tag(stem[i + 1 :])):
            return tag
    return None


def tagged_revision(revision: str, tag: str | None) -> str:
    """The revision a tagged pull is recorded under (its ``refs/`` name)."""
    return f"{revision}:{tag}" if tag else revision


def is_tagged(revision: str) -> bool:
    return ":" in revision


def tag_files(paths: Iterable[str], tag: str) -> list[str]:
    """The GGUF files of ``paths`` the tag names."""
    return [p for p in paths if file_tag(p) == tag]


def available(paths: Iterable[str]) -> dict[str, list[str]]:
    """``{tag: [files]}`` of the GGUF files among ``paths``."""
    out: dict[str, list[str]] = {}
    for path in paths:
        if (tag := file_tag(path)) is not None:
            out.setdefault(tag, []).append(path)
    return out


def select(paths: Iterable[str], tag: str, *, model: str) -> list[str]:
    """The files a pull of ``model:tag`` keeps: the tag's GGUF files and every file that holds
    no weights. ``ModelNotFound`` listing the tags there are when the tag names no file."""
    from hfd.daemon.store.safety import is_weight  # safety imports this module

    paths = list(paths)
    chosen = tag_files(paths, tag)
    if not chosen:
        tags = available(paths)
        there = ", ".join(f"{t} ({', '.join(files)})" for t, files in sorted(tags.items()))
        raise ModelNotFound(
            f"{model} has no GGUF file tagged {tag}; "
            + (f"its tags: {there}" if tags else "it has no tagged GGUF files"),
            details={"tag": tag, "tags": sorted(tags)},
        )
    return chosen + [p for p in paths if not is_weight(p)]


def load_option(ref: str, path: Path) -> dict[str, str]:
    """The model option ``gguf_file`` a tagged reference loads with: its tag's file in the
    snapshot (the first shard of a split one); nothing for other references."""
    if ref.startswith(("/", ".", "~")):
        return {}
    tag = quant_tag(split_tag(ref)[1])
    if tag is None or not path.is_dir():
        return {}
    files = sorted(p.name for p in path.iterdir() if p.is_file() and file_tag(p.name) == tag)
    return {"gguf_file": files[0]} if files else {}


def ref_name(repo: str, revision: str) -> str:
    """How a stored revision is named as a reference: ``main:Q4_K_M`` of org/name is
    ``org/name:Q4_K_M``, ``v2:Q8_0`` is ``org/name@v2:Q8_0``, other revisions ``org/name@v2``."""
    base, _, tag = revision.partition(":")
    name = repo if base == "main" and tag else f"{repo}@{base}"
    return f"{name}:{tag}" if tag else name
