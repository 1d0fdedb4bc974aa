"""Model references: what a user or a config file names a model with.

    org/name            a Hub repository at its default branch (main)
    org/name@revision   a branch, tag or 40-hex commit
    org/name:Q4_K_M     one GGUF file of the repository, by its quantization tag (also with
                        @revision before the tag; see ``hfd.daemon.store.gguf_tags``)
    ipfs://<cid>        a snapshot published to IPFS (its manifest says which repo and commit)
    /a/path, ./a/path   a local model directory, used in place
    alias               a name from [[models]] in the settings, standing for its ``ref``

As with ``from_pretrained``, a reference that names an existing directory is that directory
(``models/foo`` beside the working directory is a path, not the repo ``models/foo``); write
``./`` or an absolute path to make it explicit, since a service's working directory is ``/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal

from hfd._safe_paths import check_repo, check_revision
from hfd.client.errors import InvalidRequest, ValidationFailed
from hfd.daemon.settings import ModelSpec, Settings
from hfd.daemon.store.gguf_tags import quant_tag, split_tag, tagged_revision

DEFAULT_REVISION: Final = "main"
IPFS_SCHEME: Final = "ipfs://"
# CIDv0 (base58 "Qm...") or CIDv1 in any multibase (base32 "b...", base58 "z...", ...).
CID_RE: Final = re.compile(r"^(Qm[1-9A-HJ-NP-Za-km-z]{44}|[bBzfFkKmuU][0-9A-Za-z]{20,200})$")

RefKind = Literal["repo", "ipfs", "path"]


@dataclass(frozen=True)
class ModelRef:
    kind: RefKind
    text: str  # what the user wrote (the alias, when one was used)
    repo: str | None = None
    revision: str = DEFAULT_REVISION
    cid: str | None = None  # the CID of an ipfs:// ref, or a CID configured for this model
    path: Path | None = None
    allow_pickle: bool = False
    explicit_revision: bool = False  # "@revision" was written (hfd rm then removes only that snapshot)
    tag: str | None = None  # a GGUF quantization tag (org/name:Q4_K_M), upper case

    @property
    def stored_revision(self) -> str:
        """The revision the snapshot is recorded under: ``main``, or ``main:Q4_K_M`` when tagged."""
        return tagged_revision(self.revision, self.tag)

    @property
    def key(self) -> str:
        """What concurrent pulls of the same snapshot agree on (the repo lock covers the rest)."""
        if self.repo:
            return f"{self.repo}@{self.stored_revision}"
        if self.cid:
            return f"ipfs:{self.cid}"
        return str(self.path)

    def __str__(self) -> str:
        if self.kind == "repo":
            return f"{self.repo}@{self.stored_revision}"
        if self.kind == "ipfs":
            return f"{IPFS_SCHEME}{self.cid}"
        return str(self.path)


def check_cid(cid: str) -> str:
    if not CID_RE.match(cid):
        raise ValidationFailed(f"{cid!r} is not a CID")
    return cid


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", "file://")) or text in (".", "..")


def parse_ref(text: str | ModelSpec, settings: Settings | None = None) -> ModelRef:
    """Parse a reference, expanding an alias from ``settings.models`` (or taken from a ModelSpec)."""
    if isinstance(text, ModelSpec):
        return replace(_parse(text.ref.strip(), text), text=text.public_name)
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("a model reference must be a non-empty string", param="model")
    text = text.strip()
    spec = settings.model(text) if settings is not None else None
    if spec is not None:
        ref = _parse(spec.ref, spec)
        return replace(ref, text=text)
    return _parse(text, None)


def _parse(text: str, spec: ModelSpec | None) -> ModelRef:
    allow_pickle = bool(spec and spec.allow_pickle)
    known_cid = check_cid(spec.cid) if spec and spec.cid else None
    if text.startswith(IPFS_SCHEME):
        cid = text[len(IPFS_SCHEME) :].strip("/")
        try:
            check_cid(cid)
        except ValidationFailed as exc:
            raise InvalidRequest(f"{text!r}: {exc.message}", param="model") from exc
        return ModelRef("ipfs", text, cid=cid, allow_pickle=allow_pickle)
    if _looks_like_path(text) or Path(text).expanduser().is_dir():
        raw = text[len("file://") :] if text.startswith("file://") else text
        return ModelRef("path", text, path=Path(raw).expanduser().resolve(), allow_pickle=allow_pickle)
    name, written_tag = split_tag(text)
    tag = quant_tag(written_tag)
    if written_tag is not None and tag is None:
        raise InvalidRequest(
            f"{text!r}: {written_tag!r} is not a GGUF quantization tag (such as Q4_K_M, Q8_0 or F16); "
            "a revision is written org/name@revision",
            param="model",
        )
    repo, sep, revision = name.partition("@")
    try:
        check_repo(repo)
        if sep:
            check_revision(revision)
    except ValidationFailed as exc:
        raise InvalidRequest(
            f"{text!r} is not a model reference: use org/name[@revision], ipfs://<cid>, a directory path "
            f"or a configured alias ({exc.message})",
            param="model",
        ) from exc
    return ModelRef(
        "repo",
        text,
        repo=repo,
        revision=revision if sep else DEFAULT_REVISION,
        cid=known_cid,
        allow_pickle=allow_pickle,
        explicit_revision=bool(sep),
        tag=tag,
    )
