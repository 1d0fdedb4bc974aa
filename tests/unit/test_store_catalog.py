"""The DuckDB catalog: rows per snapshot and file, and sharing the file with another process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from hfd.daemon.store.catalog import Catalog, PublishedRow, utcnow
from hfd.daemon.store.writer import PlacedFile

SHA = "e" * 64


def _files() -> list[PlacedFile]:
    return [
        PlacedFile("config.json", 10, SHA, "1" * 40),
        PlacedFile("model.safetensors", 99, SHA, SHA, "bafkcid"),
    ]


def test_records_snapshot_and_files(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.record_snapshot(
        repo="acme/x", commit="a" * 40, revision="main", source="hub", files=_files(), task="embed"
    )
    row = cat.snapshot("acme/x", "a" * 40)
    assert row is not None
    assert (row.source, row.revision, row.file_count, row.total_size, row.task) == (
        "hub",
        "main",
        2,
        109,
        "embed",
    )
    assert row.last_used is None
    assert cat.files("acme/x", "a" * 40) == sorted(_files(), key=lambda f: f.path)
    cat.touch("acme/x", "a" * 40)
    assert cat.snapshot("acme/x", "a" * 40).last_used is not None  # type: ignore[union-attr]
    cat.set_cids("acme/x", "a" * 40, "bafyroot", {"config.json": "bafkconfig"})
    assert cat.by_cid("bafyroot").commit == "a" * 40  # type: ignore[union-attr]
    # Re-recording keeps what is known (CIDs, last use) and replaces the file list.
    cat.record_snapshot(repo="acme/x", commit="a" * 40, revision="main", source="hub", files=_files()[:1])
    row = cat.snapshot("acme/x", "a" * 40)
    assert row is not None and row.cid == "bafyroot" and row.last_used is not None
    assert [f.cid for f in cat.files("acme/x", "a" * 40)] == ["bafkconfig"]
    cat.forget("acme/x", "a" * 40)
    assert cat.snapshot("acme/x", "a" * 40) is None and cat.files("acme/x", "a" * 40) == []


def test_published_cids_by_revision_or_commit(tmp_path: Path) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.record_published(
        PublishedRow("bafyone", "acme/x", "main", "b" * 40, 1, True, "size-262144", "sha2-256", utcnow())
    )
    assert cat.published_cids("acme/x", "main") == ["bafyone"]
    assert cat.published_cids("acme/x", "b" * 40) == ["bafyone"]
    assert cat.published_cids("acme/y", "main") == []


def test_waits_for_another_process_holding_the_file(tmp_path: Path) -> None:
    """DuckDB lets one process open the file; the catalog retries instead of failing."""
    path = tmp_path / "catalog.duckdb"
    Catalog(path).snapshots()  # create it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import duckdb, sys, time
                conn = duckdb.connect({str(path)!r})
                print("held", flush=True)
                time.sleep(1.5)
                conn.close()
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        cat = Catalog(path)
        cat.record_snapshot(repo="acme/x", commit="c" * 40, revision="main", source="bundle", files=_files())
        assert cat.snapshot("acme/x", "c" * 40) is not None
    finally:
        holder.communicate(timeout=30)  # waits, and closes the pipe
