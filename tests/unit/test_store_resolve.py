"""Resolving references offline: local dirs, the store, an existing HF cache, aliases; rm and touch."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from support.models import tiny_bert
from support.store_env import closed_port, store_settings

from hfd.client.errors import InvalidRequest, ModelNotFound
from hfd.daemon.settings import ModelSpec
from hfd.daemon.store.layout import CacheLayout
from hfd.daemon.store.model_store import ModelStore
from hfd.daemon.store.writer import BlobSink, FileSpec


def _bundle(path: Path, repo: str, commit: str, files: dict[str, bytes]) -> Path:
    manifest = {
        "format": "hfd-manifest",
        "version": 1,
        "repo": repo,
        "revision": "main",
        "commit": commit,
        "files": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in files.items()
        ],
    }
    with tarfile.open(path, "w") as tar:
        for name, data in [("hfd-manifest.json", json.dumps(manifest).encode()), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _stored_bert(tmp: Path, store: ModelStore) -> str:
    bundle = tmp / "bert.tar"
    ModelStore(store_settings(tmp / "src")).export(str(tiny_bert()), bundle, repo="acme/tiny-bert")
    snap = store.import_bundle(bundle)
    assert snap.commit is not None
    return snap.commit


def test_local_directory_resolves_to_itself(tmp_path: Path) -> None:
    store = ModelStore(store_settings(tmp_path))
    model = tiny_bert()
    snap = store.resolve(str(model), allow_pull=False)
    assert (snap.path, snap.source, snap.commit) == (model, "local", None)
    assert not store.root.exists()  # nothing was copied
    with pytest.raises(ModelNotFound) as err:
        store.resolve(str(tmp_path / "nope"), allow_pull=True)
    assert str(tmp_path / "nope") in err.value.message


def test_stored_model_resolves_with_every_source_unreachable(tmp_path: Path, hub_online: None) -> None:
    index = tmp_path / "cids.txt"
    index.write_text("acme/missing bafybeihwr75viuzrw7m66hpclvrry3zrqwb3nue6l7u26fn4hxwyw4e7wa\n")
    settings = store_settings(
        tmp_path,
        hub_offline=False,
        hub_endpoint=f"http://127.0.0.1:{closed_port()}",
        store_use_hf_cache=True,
        hf_cache_dir=tmp_path / "hf",
        ipfs_index=index,
    )
    store = ModelStore(settings)
    commit = _stored_bert(tmp_path, store)
    snap = store.resolve("acme/tiny-bert", allow_pull=True)
    assert (snap.commit, snap.source, snap.revision) == (commit, "bundle", "main")
    assert store.resolve(f"acme/tiny-bert@{commit}", allow_pull=True).path == snap.path

    with pytest.raises(ModelNotFound) as err:
        store.resolve("acme/missing", allow_pull=True)
    message = err.value.message
    assert "acme/missing" in message
    for place in ("store: not there", "Hugging Face cache: not there", "IPFS", "unreachable", "Hub (http://"):
        assert place in message, place
    # Clients get this message: it names the places, never the state directory or the HF cache.
    for path in (str(settings.state_dir), str(tmp_path / "hf")):
        assert path not in message and path not in str(err.value.to_dict()), path
    assert [p["place"].split(" ")[0] for p in err.value.details["looked_in"]] == [
        "store",
        "Hugging",
        "IPFS",
        "Hub",
    ]


def test_without_pulling_the_error_says_so(tmp_path: Path) -> None:
    store = ModelStore(store_settings(tmp_path))
    with pytest.raises(ModelNotFound) as err:
        store.resolve("acme/absent@v1", allow_pull=False)
    assert "allow_pull" in err.value.message and "hfd pull acme/absent@v1" in err.value.message
    assert "not used (store_use_hf_cache = false)" in err.value.message


def test_existing_hf_cache_is_read_as_is(tmp_path: Path) -> None:
    hf = CacheLayout(tmp_path / "hf")
    repo = hf.repo("acme/cached")
    data = b'{"model_type": "bert"}'
    spec = FileSpec(
        "config.json", len(data), hashlib.sha256(data).hexdigest(), hashlib.sha256(data).hexdigest()
    )
    with BlobSink(repo, spec) as sink:
        sink.write(data)
        sink.finish()
    repo.link_snapshot("b" * 40, {"config.json": spec.blob})
    repo.write_ref("main", "b" * 40)

    store = ModelStore(store_settings(tmp_path, store_use_hf_cache=True, hf_cache_dir=tmp_path / "hf"))
    snap = store.resolve("acme/cached", allow_pull=False)
    assert (snap.source, snap.commit, snap.path) == ("hf-cache", "b" * 40, repo.snapshot("b" * 40))
    assert not store.root.exists()
    assert [i.snapshot.source for i in store.list_snapshots()] == ["hf-cache"]
    assert store.show("acme/cached").files[0].sha256 == spec.sha256
    with pytest.raises(ModelNotFound):
        store.remove("acme/cached")  # hfd never deletes from someone else's cache
    assert repo.snapshot("b" * 40).is_dir()
    off = ModelStore(store_settings(tmp_path, store_use_hf_cache=False, hf_cache_dir=tmp_path / "hf"))
    assert off.find("acme/cached") is None


def test_alias_and_model_spec(tmp_path: Path) -> None:
    store = ModelStore(store_settings(tmp_path, models=(ModelSpec(ref="acme/tiny-bert", name="bert"),)))
    commit = _stored_bert(tmp_path, store)
    assert store.resolve("bert", allow_pull=False).commit == commit
    assert store.resolve(store.settings.models[0], allow_pull=False).commit == commit
    with pytest.raises(InvalidRequest):
        store.resolve("not a ref", allow_pull=False)


def test_rm_frees_only_unshared_blobs(tmp_path: Path) -> None:
    store = ModelStore(store_settings(tmp_path))
    shared = b'{"model_type": "bert"}'
    one = store.import_bundle(
        _bundle(tmp_path / "1.tar", "acme/x", "1" * 40, {"config.json": shared, "a.safetensors": b"A" * 1000})
    )
    two = store.import_bundle(
        _bundle(tmp_path / "2.tar", "acme/x", "2" * 40, {"config.json": shared, "b.safetensors": b"B" * 500})
    )
    repo = store.layout.repo("acme/x")
    assert repo.refs_map() == {"main": "2" * 40}
    assert len(list(repo.blobs.iterdir())) == 3

    removed = store.remove(f"acme/x@{'1' * 40}")
    assert removed.commits == ("1" * 40,) and removed.freed == 1000
    assert not one.path.exists() and (two.path / "config.json").read_bytes() == shared
    assert store.catalog.snapshot("acme/x", "1" * 40) is None

    removed = store.remove("acme/x")
    assert removed.freed == len(shared) + 500
    assert not repo.root.exists() and store.catalog.snapshots() == []
    with pytest.raises(ModelNotFound):
        store.remove("acme/x")
    with pytest.raises(InvalidRequest):
        store.remove(str(tmp_path))


def test_touch_list_and_show(tmp_path: Path) -> None:
    store = ModelStore(store_settings(tmp_path))
    commit = _stored_bert(tmp_path, store)
    snap = store.resolve("acme/tiny-bert", allow_pull=False)
    store.touch(snap)
    row = store.catalog.snapshot("acme/tiny-bert", commit)
    assert row is not None and row.last_used is not None
    [info] = store.list_snapshots()
    assert (info.snapshot.repo, info.refs, info.task, info.snapshot.source) == (
        "acme/tiny-bert",
        ("main",),
        "embed",
        "bundle",
    )
    shown = store.show("acme/tiny-bert")
    on_disk = {p.relative_to(tiny_bert()).as_posix(): p for p in tiny_bert().rglob("*") if p.is_file()}
    assert {f.path for f in shown.files} == set(on_disk)
    for f in shown.files:
        assert f.sha256 == hashlib.sha256(on_disk[f.path].read_bytes()).hexdigest()
    assert shown.size == sum(p.stat().st_size for p in on_disk.values())


def test_resolver_for_the_model_manager(tmp_path: Path) -> None:
    from hfd.daemon.store import resolver

    settings = store_settings(tmp_path, models=(ModelSpec(ref="acme/tiny-bert", name="bert"),))
    store = ModelStore(settings)
    commit = _stored_bert(tmp_path, store)
    resolve = resolver(settings)
    assert resolve(settings.models[0]) == store.layout.repo("acme/tiny-bert").snapshot(commit)
    assert store.catalog.snapshot("acme/tiny-bert", commit).last_used is not None  # type: ignore[union-attr]
    assert resolve(ModelSpec(ref=str(tiny_bert()))) == tiny_bert()
    with pytest.raises(ModelNotFound):
        resolve(ModelSpec(ref="acme/other"))  # allow_pull is off by default
