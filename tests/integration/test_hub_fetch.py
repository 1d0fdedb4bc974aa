"""The Hub fallback through huggingface_hub's own download code, against a local Hub-compatible server."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert
from support.store_env import store_settings

from hfd.client.errors import Forbidden, ModelNotFound, VerificationFailed
from hfd.daemon.store.model_store import ModelStore
from hfd.daemon.store.pull import PullProgress, pull

pytestmark = pytest.mark.usefixtures("hub_online")


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer([HubRepo.from_dir("acme/tiny-bert", tiny_bert())]) as server:
        yield server


def _store(tmp: Path, hub: HubServer, **kw: object) -> ModelStore:
    return ModelStore(store_settings(tmp, hub_offline=False, hub_endpoint=hub.url, **kw))


def _nothing_stored(store: ModelStore, repo: str) -> None:
    d = store.layout.repo(repo)
    assert d.commits() == [] and d.refs_map() == {}
    assert not d.blobs.exists() or [p.name for p in d.blobs.iterdir() if len(p.name) == 64] == []
    assert store.catalog.snapshots() == []


def test_pull_from_hub_verifies_and_loads_offline(tmp_path: Path, hub: HubServer) -> None:
    from transformers import AutoModel, AutoTokenizer

    store = _store(tmp_path, hub)
    repo = hub.repos["acme/tiny-bert"]
    snap = store.pull("acme/tiny-bert")
    assert (snap.repo, snap.commit, snap.source, snap.revision) == (
        "acme/tiny-bert",
        repo.commit,
        "hub",
        "main",
    )
    # Blob names are what the Hub's ETags are: sha256 for LFS files, git blob sha1 otherwise.
    assert set(store.layout.repo("acme/tiny-bert").snapshot_files(repo.commit).values()) == {
        repo.etag(p) for p in repo.files
    }
    AutoModel.from_pretrained("acme/tiny-bert", cache_dir=store.root, local_files_only=True)
    AutoTokenizer.from_pretrained(snap.path, local_files_only=True)
    files = {f.path: f for f in store.catalog.files("acme/tiny-bert", repo.commit)}
    assert set(files) == set(repo.files)
    import hashlib

    assert all(files[p].sha256 == hashlib.sha256(d).hexdigest() for p, d in repo.files.items())
    # A second pull is answered by the store without asking the Hub.
    before = len(hub.requests)
    assert store.pull("acme/tiny-bert").path == snap.path
    assert len(hub.requests) == before


@pytest.mark.parametrize("path", ["model.safetensors", "config.json"])
def test_corrupted_file_is_rejected(tmp_path: Path, hub: HubServer, path: str) -> None:
    """LFS files are checked against the Hub's sha256, plain git files against the git blob sha1."""
    hub.corrupt.add(("acme/tiny-bert", path))
    store = _store(tmp_path, hub)
    with pytest.raises(VerificationFailed) as err:
        store.pull("acme/tiny-bert")
    assert path in err.value.message and err.value.code == "verification_failed"
    _nothing_stored(store, "acme/tiny-bert")
    d = store.layout.repo("acme/tiny-bert")
    assert not d.blobs.exists() or not [
        p for p in d.blobs.iterdir() if p.name.startswith(hub.repos["acme/tiny-bert"].etag(path))
    ]


def test_missing_repo_names_the_hub(tmp_path: Path, hub: HubServer) -> None:
    store = _store(tmp_path, hub)
    with pytest.raises(ModelNotFound) as err:
        store.pull("acme/nope")
    assert hub.url in err.value.message and "does not exist on the Hub" in err.value.message
    with pytest.raises(ModelNotFound):
        store.pull("acme/tiny-bert@no-such-branch")


def test_pickled_weights(tmp_path: Path, hub: HubServer) -> None:
    hub.add(HubRepo("acme/old", {"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickled"}))
    hub.add(
        HubRepo(
            "acme/both",
            {"config.json": b"{}", "model.safetensors": b"S" * 100, "pytorch_model.bin": b"P" * 100},
        )
    )
    store = _store(tmp_path, hub)
    with pytest.raises(Forbidden) as err:
        store.pull("acme/old")
    assert "pytorch_model.bin" in err.value.message
    assert not any("pytorch_model.bin" in r for r in hub.requests)  # refused before downloading
    assert (store.pull("acme/old", allow_pickle=True).path / "pytorch_model.bin").exists()
    both = store.pull("acme/both")
    assert sorted(p.name for p in both.path.iterdir()) == ["config.json", "model.safetensors"]


def test_concurrent_pulls_download_once(tmp_path: Path, hub: HubServer) -> None:
    hub.rate = 2_000_000  # slow enough that the pulls overlap
    store = _store(tmp_path, hub)
    other = _store(
        tmp_path, hub
    )  # a second store object on the same state dir: the lock file serialises them
    results: list[object] = []

    def run(s: ModelStore) -> None:
        results.append(s.pull("acme/tiny-bert").path)

    threads = [threading.Thread(target=run, args=(s,)) for s in (store, store, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and len(set(results)) == 1
    assert sum(r.startswith("GET /api/models/acme/tiny-bert") for r in hub.requests) == 1
    assert sum(r.startswith("GET /lfs/") for r in hub.requests) == 1  # the weights, via the CDN redirect


def test_interrupted_download_resumes_with_a_range_request(tmp_path: Path, hub: HubServer) -> None:
    repo = hub.repos["acme/tiny-bert"]
    store = _store(tmp_path, hub)
    sha = repo.etag("model.safetensors")
    blobs = store.layout.repo("acme/tiny-bert").blobs
    blobs.mkdir(parents=True)
    (blobs / f"{sha}.incomplete").write_bytes(repo.files["model.safetensors"][:60_000])
    snap = store.pull("acme/tiny-bert")
    assert (snap.path / "model.safetensors").read_bytes() == repo.files["model.safetensors"]
    assert "bytes=60000-" in hub.ranges


def test_async_pull_reports_progress(tmp_path: Path, hub: HubServer) -> None:
    store = _store(tmp_path, hub)
    events: list[PullProgress] = []
    loop_thread: list[int] = []

    def on_progress(p: PullProgress) -> None:
        events.append(p)
        loop_thread.append(threading.get_ident())

    async def main() -> object:
        return await pull(store, "acme/tiny-bert", on_progress)

    snap = anyio.run(main)
    assert snap == store.find("acme/tiny-bert")
    statuses = [e.status for e in events]
    assert statuses[0] == "resolving" and statuses[-1] == "done" and "downloading" in statuses
    last = events[-1]
    assert last.total == sum(len(d) for d in hub.repos["acme/tiny-bert"].files.values()) == last.completed
    assert last.files_done == last.files_total == len(hub.repos["acme/tiny-bert"].files)
    assert set(loop_thread) == {threading.get_ident()}  # called on the event loop's thread
    assert last.to_dict()["status"] == "done"


def test_hub_server_is_compatible_with_snapshot_download(tmp_path: Path, hub: HubServer) -> None:
    """The stand-in answers huggingface_hub's own snapshot_download; its cache is then read as is."""
    from huggingface_hub import snapshot_download

    hf_cache = tmp_path / "hf"
    path = snapshot_download("acme/tiny-bert", cache_dir=hf_cache, endpoint=hub.url)
    assert sorted(os.listdir(path)) == sorted({p.split("/")[0] for p in hub.repos["acme/tiny-bert"].files})
    hub.stop()
    store = ModelStore(store_settings(tmp_path, store_use_hf_cache=True, hf_cache_dir=hf_cache))
    snap = store.resolve("acme/tiny-bert", allow_pull=False)
    assert snap.source == "hf-cache" and str(snap.path) == path
