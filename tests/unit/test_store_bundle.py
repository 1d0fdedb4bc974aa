"""Offline bundles: export, import verified, and hostile tars refused with nothing half-written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from support.models import tiny_bert
from support.store_env import store_settings

from hfd.client.errors import Forbidden, ValidationFailed, VerificationFailed
from hfd.daemon.store.model_store import ModelStore

COMMIT = "f" * 40


def _store(tmp: Path, name: str = "s") -> ModelStore:
    return ModelStore(store_settings(tmp / name))


def _manifest(files: dict[str, bytes], **changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "format": "hfd-manifest",
        "version": 1,
        "repo": "acme/evil",
        "revision": "main",
        "commit": COMMIT,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files.items()
        ],
    }
    doc.update(changes)
    return json.dumps(doc).encode()


def _tar(path: Path, members: Sequence[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


def _reg(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _assert_nothing_stored(store: ModelStore) -> None:
    repo = store.layout.repo("acme/evil")
    assert not repo.snapshots.exists() or repo.commits() == []
    assert not repo.refs.exists() or repo.refs_map() == {}
    assert (
        not repo.blobs.exists()
        or [p for p in repo.blobs.iterdir() if not p.name.endswith(".incomplete")] == []
    )
    assert store.catalog.snapshots() == []


def test_export_import_round_trip_loads_offline(tmp_path: Path) -> None:
    pytest.importorskip("transformers", reason="the round trip is proven by transformers loading it")
    from transformers import AutoModel, AutoTokenizer

    source = _store(tmp_path, "a")
    bundle = tmp_path / "tiny.tar"
    manifest, size = source.export(str(tiny_bert()), bundle, repo="acme/tiny-bert")
    assert size == bundle.stat().st_size and manifest.repo == "acme/tiny-bert"
    # Bundles are reproducible: same model, same bytes.
    source.export(str(tiny_bert()), tmp_path / "again.tar", repo="acme/tiny-bert")
    assert (tmp_path / "again.tar").read_bytes() == bundle.read_bytes()

    target = _store(tmp_path, "b")
    snap = target.import_bundle(bundle)
    assert (snap.repo, snap.commit, snap.source) == ("acme/tiny-bert", manifest.commit, "bundle")
    AutoModel.from_pretrained("acme/tiny-bert", cache_dir=target.root, local_files_only=True)
    AutoTokenizer.from_pretrained(snap.path, local_files_only=True)
    row = target.catalog.snapshot("acme/tiny-bert", manifest.commit)
    assert row is not None and row.source == "bundle" and row.file_count == len(manifest.files)
    # Exporting the stored copy gives the same manifest back.
    again, _ = target.export("acme/tiny-bert", tmp_path / "from-store.tar")
    assert again.to_json() == manifest.to_json()


def test_corrupted_member_is_rejected_and_nothing_is_stored(tmp_path: Path) -> None:
    good = b'{"model_type": "bert"}'
    weights = b"\x01" * 5000
    man = _manifest({"config.json": good, "model.safetensors": weights})
    bundle = _tar(
        tmp_path / "bad.tar",
        [
            (_reg("hfd-manifest.json"), man),
            (_reg("config.json"), good),
            (_reg("model.safetensors"), b"\x02" * 5000),
        ],
    )
    store = _store(tmp_path)
    with pytest.raises(VerificationFailed) as err:
        store.import_bundle(bundle)
    assert "model.safetensors" in err.value.message
    _assert_nothing_stored(store)


@pytest.mark.parametrize(
    "member",
    [
        "../evil.txt",
        "/tmp/evil.txt",
        "a/../../evil.txt",
        "symlink",
        "hardlink",
        "fifo",
        "unlisted.txt",
        "duplicate",
    ],
)
def test_hostile_members_are_refused(tmp_path: Path, member: str) -> None:
    data = b"payload"
    man = _manifest({"config.json": data})
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_reg("hfd-manifest.json"), man),
        (_reg("config.json"), data),
    ]
    if member in ("symlink", "hardlink"):
        info = _reg("config.json")
        info.type = tarfile.SYMTYPE if member == "symlink" else tarfile.LNKTYPE
        info.linkname = "/etc/passwd"
        members = [(_reg("hfd-manifest.json"), man), (info, None)]
    elif member == "fifo":
        info = _reg("config.json")
        info.type = tarfile.FIFOTYPE
        members = [(_reg("hfd-manifest.json"), man), (info, None)]
    elif member == "duplicate":
        members.append((_reg("config.json"), data))
    else:
        members.append((_reg(member), data))
    bundle = _tar(tmp_path / "hostile.tar", members)
    store = _store(tmp_path)
    with pytest.raises(ValidationFailed):
        store.import_bundle(bundle)
    _assert_nothing_stored(store)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_manifest_must_come_first_and_files_must_all_be_there(tmp_path: Path) -> None:
    data = b"payload"
    man = _manifest({"config.json": data, "tokenizer.json": b"{}"})
    store = _store(tmp_path)
    with pytest.raises(ValidationFailed):
        store.import_bundle(
            _tar(tmp_path / "order.tar", [(_reg("config.json"), data), (_reg("hfd-manifest.json"), man)])
        )
    with pytest.raises(VerificationFailed) as err:
        store.import_bundle(
            _tar(tmp_path / "short.tar", [(_reg("hfd-manifest.json"), man), (_reg("config.json"), data)])
        )
    assert "tokenizer.json" in err.value.message
    _assert_nothing_stored(store)
    with pytest.raises(ValidationFailed):
        store.import_bundle(tmp_path / "missing.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ValidationFailed):
        store.import_bundle(tmp_path / "junk.tar")


def test_pickled_weights_need_permission(tmp_path: Path) -> None:
    files = {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickle"}
    man = _manifest(files)
    bundle = _tar(
        tmp_path / "pickle.tar", [(_reg("hfd-manifest.json"), man)] + [(_reg(p), d) for p, d in files.items()]
    )
    store = _store(tmp_path)
    with pytest.raises(Forbidden) as err:
        store.import_bundle(bundle)
    assert "pytorch_model.bin" in err.value.message
    _assert_nothing_stored(store)
    snap = store.import_bundle(bundle, allow_pickle=True)
    assert (snap.path / "pytorch_model.bin").read_bytes() == files["pytorch_model.bin"]
