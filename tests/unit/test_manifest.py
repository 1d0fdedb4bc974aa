"""hfd-manifest.json: round trip, stable bytes, and hostile manifests refused before anything is written."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from hfd.client.errors import ValidationFailed
from hfd.ipfs.manifest import Manifest, ManifestFile, content_commit, parse_manifest

SHA = hashlib.sha256(b"x").hexdigest()
COMMIT = "a" * 40


def _doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "hfd-manifest",
        "version": 1,
        "repo": "acme/tiny",
        "revision": "main",
        "commit": COMMIT,
        "files": [{"path": "config.json", "size": 1, "sha256": SHA, "blob": SHA}],
        "ipfs": {"cid_version": 1},
    }
    doc.update(changes)
    return doc


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_round_trip_and_stable_bytes() -> None:
    files = (ManifestFile("b/w.safetensors", 5, SHA, SHA), ManifestFile("a.json", 1, SHA, "1" * 40))
    manifest = Manifest("acme/tiny", "main", COMMIT, files, {"cid_version": 1, "raw_leaves": True})
    again = parse_manifest(manifest.to_json())
    assert again.repo == "acme/tiny" and again.commit == COMMIT and again.revision == "main"
    assert {f.path: f for f in again.files} == {f.path: f for f in files}
    # The same snapshot always serialises to the same bytes (so it always gets the same CID).
    reordered = Manifest("acme/tiny", "main", COMMIT, files[::-1], {"raw_leaves": True, "cid_version": 1})
    assert reordered.to_json() == manifest.to_json()


def test_blob_defaults_to_sha256() -> None:
    doc = _doc(files=[{"path": "config.json", "size": 1, "sha256": SHA}])
    assert parse_manifest(_raw(doc)).files[0].blob == SHA


def test_content_commit_depends_on_content() -> None:
    a = [ManifestFile("x", 1, SHA, SHA)]
    b = [ManifestFile("x", 1, hashlib.sha256(b"y").hexdigest(), SHA)]
    assert content_commit(a) == content_commit(list(a))
    assert content_commit(a) != content_commit(b)
    assert len(content_commit(a)) == 40


@pytest.mark.parametrize(
    "path",
    [
        "../evil",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "./a",
        "a/./b",
        "a\\..\\b",
        "a\0b",
        "",
        "hfd-manifest.json",
    ],
)
def test_paths_that_could_escape_are_refused(path: str) -> None:
    doc = _doc(files=[{"path": path, "size": 1, "sha256": SHA}])
    with pytest.raises(ValidationFailed):
        parse_manifest(_raw(doc))


@pytest.mark.parametrize(
    "changes",
    [
        {"format": "something-else"},
        {"version": 2},
        {"repo": "../../etc"},
        {"repo": "a/b/c"},
        {"commit": "main"},
        {"commit": "../" + "a" * 37},
        {"revision": "../../refs"},
        {"files": "config.json"},
        {"files": [{"path": "a", "size": -1, "sha256": SHA}]},
        {"files": [{"path": "a", "size": True, "sha256": SHA}]},
        {"files": [{"path": "a", "size": 1, "sha256": "nothex"}]},
        {"files": [{"path": "a", "size": 1, "sha256": SHA, "blob": "../../x"}]},
        {"files": [{"path": "a", "size": 1, "sha256": SHA, "blob": "b" * 64}]},
        {"files": [{"path": "a", "size": 1, "sha256": SHA}, {"path": "a", "size": 1, "sha256": SHA}]},
        {"files": [{"path": "a", "size": 1, "sha256": SHA}, {"path": "a/b", "size": 1, "sha256": SHA}]},
        {"ipfs": ["not", "a", "map"]},
    ],
)
def test_malformed_manifests_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        parse_manifest(_raw(_doc(**changes)))


def test_garbage_is_refused() -> None:
    with pytest.raises(ValidationFailed):
        parse_manifest(b"\x00not json")
    with pytest.raises(ValidationFailed):
        parse_manifest(b" " * (9 * 1024 * 1024))
