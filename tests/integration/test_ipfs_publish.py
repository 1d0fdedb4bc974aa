"""Publishing to a real IPFS node and pulling by CID: verified, placed in the HF layout, loadable."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from support.hub_server import HubRepo, HubServer
from support.ipfs_node import IpfsNode
from support.models import tiny_bert
from support.store_env import closed_port, store_settings

from hfd.client.errors import ModelNotFound, VerificationFailed
from hfd.daemon.store.model_store import ModelStore
from hfd.ipfs.client import AddEntry, ImportOptions, KuboClient
from hfd.ipfs.manifest import MANIFEST_NAME

pytestmark = pytest.mark.ipfs
REPO = "acme/tiny-bert"


def _store(tmp: Path, name: str, node: IpfsNode, **kw: object) -> ModelStore:
    return ModelStore(store_settings(tmp / name, ipfs_api=node.api, **kw))


def _embed(path: Path) -> np.ndarray:
    from hfd.backends.base import LoadOptions
    from hfd.backends.torch_backend import TorchBackend

    encoder = TorchBackend().load_encoder(LoadOptions(path=path, task="embed"))
    try:
        return np.asarray(encoder.embed(encoder.tokenize(["the quick brown fox", "rivers flow to the sea"])))
    finally:
        encoder.close()


def _add_raw(node: IpfsNode, files: dict[str, bytes]) -> str:
    async def main() -> str:
        async with KuboClient(node.api) as client:
            cids = await client.add(
                "model", [AddEntry(p, data=d) for p, d in files.items()], options=ImportOptions()
            )
            return cids[""]

    return anyio.run(main)


def _manifest(
    files: dict[str, bytes], *, lie: dict[str, str] | None = None, repo: str = "acme/evil"
) -> bytes:
    lie = lie or {}
    entries = [
        {"path": p, "size": len(d), "sha256": lie.get(p, hashlib.sha256(d).hexdigest())}
        for p, d in files.items()
    ]
    return json.dumps(
        {
            "format": "hfd-manifest",
            "version": 1,
            "repo": repo,
            "revision": "main",
            "commit": "e" * 40,
            "files": entries,
        }
    ).encode()


@pytest.fixture(scope="module")
def published(ipfs_node: IpfsNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """tiny_bert published once from a first store (index file written as it goes)."""
    tmp = tmp_path_factory.mktemp("publisher")
    index = tmp / "cids.txt"
    store = _store(tmp, "a", ipfs_node, ipfs_index=index)
    result = store.publish(str(tiny_bert()), repo=REPO)
    assert store.publish(str(tiny_bert()), repo=REPO).cid == result.cid  # reproducible
    yield result.cid, index


def test_pull_by_cid_into_an_empty_store_and_load(
    ipfs_node: IpfsNode, published: tuple[str, Path], tmp_path: Path
) -> None:
    cid, _ = published
    store = _store(tmp_path, "b", ipfs_node)
    snap = store.pull(f"ipfs://{cid}")
    assert (snap.repo, snap.source) == (REPO, "ipfs")
    assert snap.path == store.layout.repo(REPO).snapshot(snap.commit or "")
    # Loaded through the engine, from the pulled copy, it embeds exactly as the original does.
    np.testing.assert_allclose(_embed(snap.path), _embed(tiny_bert()), rtol=0, atol=1e-6)
    row = store.catalog.snapshot(REPO, snap.commit or "")
    assert row is not None and row.cid == cid and row.source == "ipfs"
    assert all(f.cid for f in store.catalog.files(REPO, snap.commit or ""))
    # From now on it is in the store: by CID and by name, with IPFS gone.
    offline = ModelStore(store_settings(tmp_path / "b", ipfs_api=f"/ip4/127.0.0.1/tcp/{closed_port()}"))
    assert offline.resolve(f"ipfs://{cid}", allow_pull=False).path == snap.path
    assert offline.resolve(REPO, allow_pull=True).path == snap.path
    assert not (snap.path / MANIFEST_NAME).exists()


def test_manifest_records_import_settings(ipfs_node: IpfsNode, published: tuple[str, Path]) -> None:
    cid, _ = published

    async def main() -> bytes:
        async with KuboClient(ipfs_node.api) as client:
            return await client.cat_bytes(f"/ipfs/{cid}/{MANIFEST_NAME}", max_bytes=1 << 20)

    manifest = json.loads(anyio.run(main))
    assert manifest["repo"] == REPO
    assert manifest["ipfs"] == {
        "cid_version": 1,
        "raw_leaves": True,
        "chunker": "size-262144",
        "hash": "sha2-256",
    }


def test_pull_by_name_uses_the_cid_index(
    ipfs_node: IpfsNode, published: tuple[str, Path], tmp_path: Path
) -> None:
    cid, index = published
    assert f"{REPO}@main {cid}" in index.read_text()
    store = _store(tmp_path, "c", ipfs_node, ipfs_index=index)  # the Hub is offline
    snap = store.pull(REPO)
    assert (snap.source, snap.revision) == ("ipfs", "main")
    assert store.layout.repo(REPO).refs_map() == {"main": snap.commit}


def test_resumes_a_partial_file_with_an_offset(
    ipfs_node: IpfsNode, published: tuple[str, Path], tmp_path: Path
) -> None:
    cid, _ = published
    weights = (tiny_bert() / "model.safetensors").read_bytes()
    store = _store(tmp_path, "d", ipfs_node)
    blobs = store.layout.repo(REPO).blobs
    blobs.mkdir(parents=True)
    sha = hashlib.sha256(weights).hexdigest()
    (blobs / f"{sha}.incomplete").write_bytes(weights[:70_000])
    snap = store.pull(f"ipfs://{cid}")
    assert (snap.path / "model.safetensors").read_bytes() == weights


def test_manifest_that_lies_is_rejected(ipfs_node: IpfsNode, tmp_path: Path) -> None:
    files = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"W" * 3000}
    cid = _add_raw(ipfs_node, {**files, MANIFEST_NAME: _manifest(files, lie={"model.safetensors": "0" * 64})})
    store = _store(tmp_path, "e", ipfs_node)
    with pytest.raises(VerificationFailed) as err:
        store.pull(f"ipfs://{cid}")
    assert "model.safetensors" in err.value.message
    repo = store.layout.repo("acme/evil")
    assert repo.commits() == [] and repo.refs_map() == {} and store.catalog.snapshots() == []


@pytest.mark.parametrize("bad", ["../../escape.json", "/abs.json", "a/../../b.json"])
def test_hostile_manifest_paths_are_refused(ipfs_node: IpfsNode, tmp_path: Path, bad: str) -> None:
    files = {"config.json": b"{}"}
    doc = json.loads(_manifest(files))
    doc["files"].append({"path": bad, "size": 2, "sha256": hashlib.sha256(b"{}").hexdigest()})
    cid = _add_raw(ipfs_node, {**files, MANIFEST_NAME: json.dumps(doc).encode()})
    store = _store(tmp_path / "deep" / "er", "f", ipfs_node)
    with pytest.raises(ModelNotFound) as err:
        store.pull(f"ipfs://{cid}")
    assert "hfd-manifest.json" in err.value.message and repr(bad) in err.value.message
    assert not store.root.exists() or list(store.root.iterdir()) == []
    assert not (tmp_path / "escape.json").exists() and not (tmp_path / "deep" / "escape.json").exists()


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer([HubRepo.from_dir(REPO, tiny_bert())]) as server:
        yield server


@pytest.mark.usefixtures("hub_online")
def test_unreachable_node_falls_back_to_the_hub(
    hub: HubServer, published: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, index = published
    settings = store_settings(
        tmp_path,
        ipfs_index=index,
        hub_offline=False,
        hub_endpoint=hub.url,
        ipfs_api=f"/ip4/127.0.0.1/tcp/{closed_port()}",
    )
    with caplog.at_level(logging.WARNING, logger="hfd.daemon.store.model_store"):
        snap = ModelStore(settings).pull(REPO)
    assert snap.source == "hub"
    [record] = [r for r in caplog.records if r.getMessage() == "IPFS fetch failed, trying the next source"]
    assert record.unreachable is True  # type: ignore[attr-defined]


@pytest.mark.usefixtures("hub_online")
def test_bad_ipfs_copy_falls_back_to_the_hub(ipfs_node: IpfsNode, hub: HubServer, tmp_path: Path) -> None:
    files = {"config.json": b"{}"}
    liar = _add_raw(
        ipfs_node, {**files, MANIFEST_NAME: _manifest(files, lie={"config.json": "1" * 64}, repo=REPO)}
    )
    index = tmp_path / "cids.txt"
    index.write_text(f"{REPO} {liar}\n")
    store = _store(tmp_path, "g", ipfs_node, ipfs_index=index, hub_offline=False, hub_endpoint=hub.url)
    snap = store.pull(REPO)
    assert snap.source == "hub" and snap.commit == hub.repos[REPO].commit


@pytest.mark.usefixtures("hub_online")
def test_share_adds_hub_pulls_to_the_node(ipfs_node: IpfsNode, hub: HubServer, tmp_path: Path) -> None:
    store = _store(tmp_path, "h", ipfs_node, hub_offline=False, hub_endpoint=hub.url, ipfs_share=True)
    snap = store.pull(REPO)
    row = store.catalog.snapshot(REPO, snap.commit or "")
    assert row is not None and row.source == "hub" and row.cid

    async def pinned() -> bool:
        async with KuboClient(ipfs_node.api) as client:
            return await client.pins(row.cid or "")

    assert anyio.run(pinned)
    # Another box pulls the shared copy by CID; it keeps the Hub's commit and blob names.
    other = _store(tmp_path, "i", ipfs_node)
    copy = other.pull(f"ipfs://{row.cid}")
    assert copy.commit == hub.repos[REPO].commit
    assert other.layout.repo(REPO).snapshot_files(copy.commit or "") == store.layout.repo(
        REPO
    ).snapshot_files(snap.commit or "")
