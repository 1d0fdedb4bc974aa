"""A full disk: ``insufficient_storage`` (507) naming the model, the file and the space needed,
never ``model_not_found``; checked before the first byte, and nothing of the pull left behind.

The real case runs on a 2 MB tmpfs mounted as the store's models directory (root only; skipped,
saying why, where mounting is not permitted).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.http_door import make_settings, serving
from support.hub_server import HubRepo, HubServer
from support.store_env import store_settings

from hfd.client.errors import InsufficientStorage
from hfd.daemon.store import space
from hfd.daemon.store.model_store import ModelStore

pytestmark = pytest.mark.usefixtures("hub_online")

REPO = "acme/big"
WEIGHTS_BYTES = 3 * 1024 * 1024  # larger than the 2 MB filesystem


@pytest.fixture
def hub() -> Iterator[HubServer]:
    files = {
        "config.json": b'{"model_type": "bert"}',
        "model.safetensors": os.urandom(WEIGHTS_BYTES),
    }
    with HubServer([HubRepo(REPO, files)]) as server:
        yield server


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """``<tmp>/state/models`` on a 2 MB tmpfs."""
    models = tmp_path / "state" / "models"
    models.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(models)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mount is not permitted here: {mounted.stderr.strip()}")
    try:
        yield models
    finally:
        subprocess.run(["umount", "-l", str(models)], check=False)


def _leftovers(models: Path) -> list[str]:
    """Files under the store's model directories (blobs, partial downloads, snapshot links)."""
    return sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file() or p.is_symlink())


def _store(tmp: Path, hub: HubServer) -> ModelStore:
    return ModelStore(store_settings(tmp, hub_offline=False, hub_endpoint=hub.url, ipfs_enabled=False))


def test_precheck_refuses_before_the_first_byte(
    tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(space, "free_bytes", lambda path: 1_000_000)
    store = _store(tmp_path, hub)
    with pytest.raises(InsufficientStorage) as err:
        store.pull(REPO)
    e = err.value
    assert (e.status, e.code) == (507, "insufficient_storage")
    assert REPO in e.message and str(WEIGHTS_BYTES + 22) in e.message  # the bytes it needs
    assert e.details["needed"] == WEIGHTS_BYTES + 22 and e.details["free"] == 1_000_000
    assert str(tmp_path) not in e.message  # the store's directory goes to the log only
    assert not any(r.startswith("GET /lfs/") or "/resolve/" in r for r in hub.requests)
    assert _leftovers(store.root) == []


def test_real_full_disk_is_507_and_leaves_nothing(tmp_path: Path, hub: HubServer, tiny_fs: Path) -> None:
    store = _store(tmp_path, hub)
    assert store.root == tiny_fs
    # The pre-check sees the tmpfs is too small.
    with pytest.raises(InsufficientStorage) as err:
        store.pull(REPO)
    assert err.value.details["stage"] == "pre-check" and REPO in err.value.message
    assert _leftovers(tiny_fs) == []


def test_disk_filling_mid_pull_is_507_and_the_partial_download_is_removed(
    tmp_path: Path, hub: HubServer, tiny_fs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another writer took the space after the check: the check is told there is room.
    monkeypatch.setattr(space, "free_bytes", lambda path: 1 << 40)
    store = _store(tmp_path, hub)
    with pytest.raises(InsufficientStorage) as err:
        store.pull(REPO)
    e = err.value
    assert (e.status, e.code, e.details["stage"]) == (507, "insufficient_storage", "writing")
    assert e.details["path"] == "model.safetensors" and f"{REPO}/model.safetensors" in e.message
    assert e.details["needed"] > 0 and "more were needed" in e.message
    assert str(tmp_path) not in e.message
    assert _leftovers(tiny_fs) == []  # the config.json blob and the partial weights are gone
    assert store.catalog.snapshots() == []


def test_http_pull_answers_507_on_a_full_disk(tmp_path: Path, hub: HubServer, tiny_fs: Path) -> None:
    settings = make_settings(
        tmp_path,
        store_use_hf_cache=False,
        hub_offline=False,
        hub_endpoint=hub.url,
        ipfs_enabled=False,
    )
    with serving(settings) as (address, _server):
        r = httpx.post(address + "/api/pull", json={"model": REPO, "stream": False}, timeout=60)
    assert r.status_code == 507, r.text
    err = r.json()["error"]
    assert err["code"] == "insufficient_storage" and REPO in err["message"]
    assert str(tmp_path) not in r.text
    assert _leftovers(tiny_fs) == []


@pytest.mark.ipfs
def test_ipfs_pull_on_a_full_disk_is_507_and_leaves_nothing(
    tmp_path: Path, tiny_fs: Path, ipfs_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src-model"
    src.mkdir()
    (src / "config.json").write_bytes(b'{"model_type": "bert"}')
    (src / "model.safetensors").write_bytes(os.urandom(WEIGHTS_BYTES))
    publisher = ModelStore(store_settings(tmp_path / "pub", ipfs_api=ipfs_node.api))
    cid = publisher.publish(str(src), repo=REPO).cid

    store = ModelStore(store_settings(tmp_path, ipfs_api=ipfs_node.api))
    with pytest.raises(InsufficientStorage) as err:
        store.pull(f"ipfs://{cid}")  # the pre-check, from the manifest's sizes
    assert err.value.details["stage"] == "pre-check" and _leftovers(tiny_fs) == []

    monkeypatch.setattr(space, "free_bytes", lambda path: 1 << 40)
    with pytest.raises(InsufficientStorage) as err:
        store.pull(f"ipfs://{cid}")  # the write itself runs out of space
    assert err.value.details["stage"] == "writing" and err.value.details["path"] == "model.safetensors"
    assert _leftovers(tiny_fs) == []
