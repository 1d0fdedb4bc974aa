"""Re-verifying the store: `hfd verify`, the check before a load, quarantine, and the scrub.

A real pull from the local Hub-compatible server fills the store; one byte of a stored blob is
then flipped on disk, as a failing disk or a careless hand would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hub_server import HubRepo, HubServer
from support.models import tiny_bert
from support.store_env import closed_port, store_settings

from hfd.client.errors import ModelUnavailable
from hfd.daemon.cli import main
from hfd.daemon.settings import ModelSpec, Settings
from hfd.daemon.store import verify as verify_mod
from hfd.daemon.store.model_store import ModelStore
from hfd.daemon.store.resolving import resolver
from hfd.daemon.store.scrub import scrub_once

pytestmark = pytest.mark.usefixtures("hub_online")

REPO = "acme/tiny-bert"
WEIGHTS = "model.safetensors"


@pytest.fixture
def hub() -> Iterator[HubServer]:
    with HubServer([HubRepo.from_dir(REPO, tiny_bert())]) as server:
        yield server


def _flags(tmp: Path, hub: HubServer) -> list[str]:
    return [
        "--state-dir", str(tmp / "state"),
        "--store-use-hf-cache", "false",
        "--hub-offline", "false",
        "--hub-endpoint", hub.url,
        "--ipfs-enabled", "false",
        "--ipfs-api", f"/ip4/127.0.0.1/tcp/{closed_port()}",
        "--log-format", "json",
    ]  # fmt: skip


def _settings(tmp: Path, hub: HubServer) -> Settings:
    return store_settings(tmp, hub_offline=False, hub_endpoint=hub.url, ipfs_enabled=False)


def _blob(store: ModelStore, path: str = WEIGHTS) -> Path:
    repo_dir = store.layout.repo(REPO)
    (commit,) = repo_dir.commits()
    return repo_dir.blob(repo_dir.snapshot_files(commit)[path])


def _flip_one_byte(path: Path) -> None:
    with path.open("r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        byte = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([byte[0] ^ 0x01]))


def _hub_fetches(hub: HubServer, blob: str) -> int:
    """Body downloads of one LFS file (the Hub redirects them to /lfs/<sha256>)."""
    return sum(1 for r in hub.requests if r.startswith("GET") and r.split()[1] == f"/lfs/{REPO}/{blob}")


def test_flipped_byte_is_reported_quarantined_refused_and_pulled_again(
    tmp_path: Path, hub: HubServer, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = _flags(tmp_path, hub)
    settings = _settings(tmp_path, hub)
    store = ModelStore(settings)
    assert main(["pull", REPO, *flags]) == 0
    capsys.readouterr()
    assert main(["verify", *flags]) == 0
    assert capsys.readouterr().out.startswith("ok: ")

    blob = _blob(store)
    _flip_one_byte(blob)
    # hfd verify finds it, moves it out of blobs/ and exits non-zero.
    assert main(["verify", REPO, "--json", *flags]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    (bad,) = report["bad"]
    assert bad["repo"] == REPO and bad["files"][0].endswith("/" + WEIGHTS)
    assert bad["problem"].startswith("sha256 ") and bad["quarantined"] is True
    assert not blob.exists()
    kept = list((settings.state_dir / "quarantine" / "models--acme--tiny-bert").iterdir())
    assert [p.name.split(".")[0] for p in kept] == [blob.name]
    checks = store.catalog.blob_checks(REPO)
    assert checks[blob.name].quarantined_at is not None and checks[blob.name].problem == bad["problem"]
    # Verified again: still bad (gone), still non-zero, and the text report names it.
    assert main(["verify", *flags]) == 1
    out = capsys.readouterr()
    assert "BAD" in out.out and WEIGHTS in out.out and "quarantined" in out.out and "hfd pull" in out.err
    assert main(["show", REPO, "--json", *flags]) == 0  # hfd show tells too
    assert json.loads(capsys.readouterr().out)["missing"] == [WEIGHTS]

    # A load refuses it, saying what to run, and naming no directory of the daemon's.
    resolve = resolver(settings)
    with pytest.raises(ModelUnavailable) as err:
        resolve(ModelSpec(ref=REPO))
    message = err.value.message
    assert "damaged" in message and WEIGHTS in message and f"hfd pull {REPO}@main" in message
    assert str(settings.state_dir) not in str(err.value.to_dict())
    assert err.value.details["reason"] == "damaged"

    # hfd pull sees the snapshot is incomplete and fetches that one file again.
    before = _hub_fetches(hub, blob.name)
    assert main(["pull", REPO, *flags]) == 0
    capsys.readouterr()
    assert _hub_fetches(hub, blob.name) == before + 1
    assert blob.exists()
    assert main(["verify", *flags]) == 0
    capsys.readouterr()

    # ... and it loads and serves again.
    from transformers import AutoModel

    path = resolve(ModelSpec(ref=REPO))
    model = AutoModel.from_pretrained(path, local_files_only=True)
    assert model.config.model_type == "bert"


def test_load_hashes_only_changed_blobs_and_refuses_a_flipped_byte(
    tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, hub)
    store = ModelStore(settings)
    store.pull(REPO)
    hashed: list[str] = []
    real = verify_mod.hash_ok

    def counting(path: Path, expected: verify_mod.Expected, **kw: object) -> str | None:
        hashed.append(path.name)
        return real(path, expected, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(verify_mod, "hash_ok", counting)
    resolve = resolver(settings)
    resolve(ModelSpec(ref=REPO))
    assert hashed == []  # verified as it was pulled: nothing to hash at load

    blob = _blob(store)
    stat = blob.stat()
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, content intact
    resolve(ModelSpec(ref=REPO))
    assert hashed == [blob.name]  # hashed once, found good, recorded
    resolve(ModelSpec(ref=REPO))
    assert hashed == [blob.name]

    _flip_one_byte(blob)
    os.utime(blob, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # even with the mtime put back
    with pytest.raises(ModelUnavailable) as err:
        resolve(ModelSpec(ref=REPO))
    assert WEIGHTS in err.value.message and "hfd pull" in err.value.message
    assert not blob.exists()  # quarantined by the load check


def test_a_truncated_blob_is_refused_by_its_size(tmp_path: Path, hub: HubServer) -> None:
    settings = _settings(tmp_path, hub)
    store = ModelStore(settings)
    store.pull(REPO)
    blob = _blob(store, "config.json")
    stat = blob.stat()
    with blob.open("r+b") as fh:
        fh.truncate(stat.st_size - 1)
    with pytest.raises(ModelUnavailable) as err:
        resolver(settings)(ModelSpec(ref=REPO))
    assert "config.json" in err.value.message


def test_scrub_rehashes_least_recently_verified_and_quarantines(tmp_path: Path, hub: HubServer) -> None:
    settings = _settings(tmp_path, hub)
    store = ModelStore(settings)
    store.pull(REPO)
    blobs = {b for _, b, _, _ in store.catalog.least_recently_verified(100)}
    first = {scrub_once(store, rate=None) for _ in blobs}
    assert first == blobs  # each blob once, oldest verification first
    blob = _blob(store)
    _flip_one_byte(blob)
    # The weights are now the least recently verified again after a full round.
    seen = [scrub_once(store, rate=50e6) for _ in blobs]
    assert blob.name in seen and not blob.exists()
    assert store.catalog.blob_checks(REPO)[blob.name].quarantined_at is not None
    assert blob.name not in {b for _, b, _, _ in store.catalog.least_recently_verified(100)}
    assert not store.complete(store.find(REPO))  # type: ignore[arg-type]


def test_the_daemons_scrub_task_finds_a_flipped_byte(tmp_path: Path, hub: HubServer) -> None:
    import anyio

    from hfd.daemon.settings import with_overrides
    from hfd.daemon.store.scrub import scrub_loop

    settings = _settings(tmp_path, hub)
    store = ModelStore(settings)
    store.pull(REPO)
    blob = _blob(store)
    _flip_one_byte(blob)
    on = with_overrides(settings, store_scrub_interval=0.01, store_scrub_rate=100.0)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scrub_loop, on, ModelStore(on))
            for _ in range(600):  # at most a minute; the store is tiny
                row = store.catalog.blob_checks(REPO).get(blob.name)
                if row is not None and row.quarantined_at is not None:
                    break
                await anyio.sleep(0.1)
            tg.cancel_scope.cancel()

    anyio.run(main)
    assert store.catalog.blob_checks(REPO)[blob.name].quarantined_at is not None
    assert not blob.exists()


def test_with_pulling_on_a_damaged_model_is_repaired_at_load(tmp_path: Path, hub: HubServer) -> None:
    from hfd.daemon.settings import with_overrides

    settings = with_overrides(_settings(tmp_path, hub), allow_pull=True)
    store = ModelStore(settings)
    store.pull(REPO)
    blob = _blob(store)
    _flip_one_byte(blob)
    before = _hub_fetches(hub, blob.name)
    path = resolver(settings)(ModelSpec(ref=REPO))  # found bad, quarantined, fetched again
    assert _hub_fetches(hub, blob.name) == before + 1
    assert (path / WEIGHTS).resolve() == blob and store.verify(REPO).ok


def test_with_pulling_on_but_no_source_the_error_still_says_damaged(tmp_path: Path, hub: HubServer) -> None:
    from hfd.daemon.settings import with_overrides

    store = ModelStore(_settings(tmp_path, hub))
    store.pull(REPO)
    _flip_one_byte(_blob(store))
    offline = with_overrides(_settings(tmp_path, hub), allow_pull=True, hub_offline=True)
    with pytest.raises(ModelUnavailable) as err:
        resolver(offline)(ModelSpec(ref=REPO))
    assert "damaged" in err.value.message
