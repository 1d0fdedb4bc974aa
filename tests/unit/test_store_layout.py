"""The store on disk: verified, resumable blob writes and Hugging Face cache layout."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from support.models import tiny_bert

from hfd._digests import git_blob_sha1
from hfd.client.errors import Cancelled, VerificationFailed
from hfd.daemon.store.layout import CacheLayout
from hfd.daemon.store.writer import BlobSink, FileSpec


def _spec(path: str, data: bytes, *, git: bool = False) -> FileSpec:
    sha = hashlib.sha256(data).hexdigest()
    return FileSpec(path, len(data), git_blob_sha1(data) if git else sha, None if git else sha)


def test_blob_is_verified_then_renamed(tmp_path: Path) -> None:
    repo = CacheLayout(tmp_path).repo("acme/tiny")
    data = os.urandom(10_000)
    seen: list[int] = []
    with BlobSink(repo, _spec("w.safetensors", data), on_bytes=seen.append) as sink:
        sink.write(data[:4000])
        assert not repo.blob(sink.spec.blob).exists()  # nothing visible until verified
        sink.write(data[4000:])
        placed = sink.finish()
    assert repo.blob(placed.blob).read_bytes() == data
    assert placed.sha256 == hashlib.sha256(data).hexdigest()
    assert sum(seen) == len(data)
    assert repo.incomplete() == []


@pytest.mark.parametrize("git", [False, True])
def test_corrupt_blob_is_rejected_and_removed(tmp_path: Path, git: bool) -> None:
    repo = CacheLayout(tmp_path).repo("acme/tiny")
    data = os.urandom(5000)
    spec = _spec("config.json", data, git=git)
    with pytest.raises(VerificationFailed) as err, BlobSink(repo, spec) as sink:
        sink.write(bytes([data[0] ^ 1]) + data[1:])
        sink.finish()
    assert "config.json" in err.value.message
    assert err.value.details["path"] == "config.json"
    assert list(repo.blobs.iterdir()) == []


def test_oversized_stream_is_rejected(tmp_path: Path) -> None:
    repo = CacheLayout(tmp_path).repo("acme/tiny")
    data = b"abc"
    with pytest.raises(VerificationFailed), BlobSink(repo, _spec("a", data)) as sink:
        sink.write(data + b"more")
    assert list(repo.blobs.iterdir()) == []


def test_interrupted_blob_resumes_and_is_verified_whole(tmp_path: Path) -> None:
    repo = CacheLayout(tmp_path).repo("acme/tiny")
    data = os.urandom(50_000)
    spec = _spec("w.safetensors", data)
    written: list[int] = []
    sink = BlobSink(repo, spec, on_bytes=written.append, stop=lambda: sum(written) >= 20_000)
    with pytest.raises(Cancelled), sink:
        for i in range(0, len(data), 10_000):
            sink.write(data[i : i + 10_000])
    assert [p.stat().st_size for p in repo.incomplete()] == [20_000]
    with BlobSink(repo, spec) as again:
        assert again.offset == 20_000
        again.write(data[again.offset :])
        again.finish()
    assert repo.blob(spec.blob).read_bytes() == data
    # A resumed prefix that was wrong is caught by the whole-file digest.
    bad = _spec("other", os.urandom(1000))
    partial = repo.blob(bad.blob).with_name(bad.blob + ".incomplete")
    partial.write_bytes(b"\0" * 500)
    with pytest.raises(VerificationFailed), BlobSink(repo, bad) as sink2:
        sink2.write(b"\1" * 500)
        sink2.finish()


def test_restart_drops_written_bytes(tmp_path: Path) -> None:
    repo = CacheLayout(tmp_path).repo("acme/tiny")
    data = os.urandom(3000)
    with BlobSink(repo, _spec("a", data)) as sink:
        sink.write(b"junk")
        sink.seek(0)
        sink.truncate()
        sink.write(data)
        assert sink.tell() == len(data)
        sink.finish()


def test_layout_loads_with_transformers_offline(tmp_path: Path) -> None:
    """Blobs + relative snapshot links + refs: from_pretrained(cache_dir=...) needs no glue."""
    pytest.importorskip("transformers", reason="the layout is proven by transformers loading it")
    from transformers import AutoConfig, AutoTokenizer

    source = tiny_bert()
    repo = CacheLayout(tmp_path).repo("acme/tiny-bert")
    links: dict[str, str] = {}
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        rel = path.relative_to(source).as_posix()
        data = path.read_bytes()
        with BlobSink(repo, _spec(rel, data)) as sink:
            sink.write(data)
            links[rel] = sink.finish().blob
    commit = "c" * 40
    snap = repo.link_snapshot(commit, links)
    repo.write_ref("main", commit)
    assert all(os.readlink(snap / p).startswith("../") for p in links if "/" not in p)
    assert repo.commit_for("main") == commit and repo.commit_for(commit) == commit
    assert repo.snapshot_files(commit) == links
    config = AutoConfig.from_pretrained("acme/tiny-bert", cache_dir=tmp_path, local_files_only=True)
    assert config.model_type == "bert"
    AutoTokenizer.from_pretrained("acme/tiny-bert", cache_dir=tmp_path, local_files_only=True)
    # The snapshot survives being moved: links are relative.
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.move(tmp_path, moved)
    assert (
        AutoConfig.from_pretrained("acme/tiny-bert", cache_dir=moved, local_files_only=True).model_type
        == "bert"
    )


def test_snapshot_is_created_whole(tmp_path: Path) -> None:
    repo = CacheLayout(tmp_path).repo("acme/x")
    repo.blobs.mkdir(parents=True)
    # A crash mid-link leaves only a staging directory, which is not a snapshot and is cleaned up.
    staging = repo.snapshots / (".staging-" + "d" * 40 + "-1234")
    staging.mkdir(parents=True)
    assert repo.commits() == []
    repo.clean_staging()
    assert not staging.exists()
