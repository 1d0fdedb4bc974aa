"""Stored responses: written atomically, gone after ``max_age``, at most ``max_count`` kept
(oldest first out), and ids that are not ours name no file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from hfd._atomic_files import tmp_name
from hfd.daemon.openai_responses.store import ResponseStore


def rid() -> str:
    return f"resp_{uuid.uuid4().hex}"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def store(tmp_path: Path, clock: Clock, **kw: float) -> ResponseStore:
    return ResponseStore(
        tmp_path / "responses",
        max_age=kw.get("max_age", 100.0),
        max_count=int(kw.get("max_count", 10)),
        clock=clock,
    )


def put_at(s: ResponseStore, clock: Clock, key: str, when: float) -> None:
    s.put(key, {"response": {"id": key}})
    os.utime(s.root / f"{key}.json", (when, when))


def test_put_get_delete(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock)
    key = rid()
    put_at(s, clock, key, clock.now)
    assert s.get(key) == {"response": {"id": key}}
    assert s.delete(key) and s.get(key) is None and not s.delete(key)


def test_expired_responses_are_not_served_and_are_pruned(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock, max_age=100.0)
    old, new = rid(), rid()
    put_at(s, clock, old, clock.now - 101)
    put_at(s, clock, new, clock.now)
    assert s.get(old) is None and s.get(new) is not None
    s.prune()
    assert not (s.root / f"{old}.json").exists()


def test_count_bound_drops_the_oldest(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock, max_count=3)
    keys = [rid() for _ in range(5)]
    for i, key in enumerate(keys):
        put_at(s, clock, key, clock.now - 50 + i)
    s.prune()
    assert [k for k in keys if s.get(k) is not None] == keys[-3:]


def test_a_crash_mid_write_leaves_no_partial_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    s = store(tmp_path, clock)
    key = rid()
    put_at(s, clock, key, clock.now)

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        s.put(key, {"response": {"id": key, "new": True}})
    monkeypatch.undo()
    # The old record is whole, and the temporary file is gone.
    assert s.get(key) == {"response": {"id": key}}
    assert [p.name for p in s.root.iterdir()] == [f"{key}.json"]


def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    clock = Clock()
    s = store(tmp_path, clock)
    s.root.mkdir(parents=True)
    # A crashed write's temporary file, and one of an older release's naming.
    leftovers = [tmp_name(s.root / f"resp_{'a' * 32}.json"), s.root / ".tmp-crashed"]
    fresh = tmp_name(s.root / f"resp_{'b' * 32}.json")  # a write under way right now
    for path in [*leftovers, fresh]:
        path.write_text('{"partial')
    for path in leftovers:
        os.utime(path, (clock.now - 3600, clock.now - 3600))
    os.utime(fresh, (clock.now, clock.now))
    s.prune()
    assert [p.exists() for p in leftovers] == [False, False]
    assert fresh.exists()


@pytest.mark.parametrize("bad", ["../../etc/passwd", "resp_../x", "resp_" + "g" * 32, "", "resp_ABC"])
def test_foreign_ids_name_no_file(tmp_path: Path, bad: str) -> None:
    s = store(tmp_path, Clock())
    assert s.get(bad) is None and not s.delete(bad)
    with pytest.raises(ValueError):
        s.put(bad, {})
