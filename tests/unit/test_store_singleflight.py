"""Concurrent pulls of one model do the work once: in a process (single-flight) and across
processes (the repository lock file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from hfd.client.errors import Cancelled, Timeout
from hfd.daemon.store.fetch import Flight, SingleFlight
from hfd.daemon.store.locks import FileLock
from hfd.daemon.store.pull import PullProgress


def test_concurrent_callers_share_one_run() -> None:
    flights: SingleFlight[str] = SingleFlight()
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    seen: list[str] = []

    def work(flight: Flight) -> str:
        calls.append(1)
        started.set()
        release.wait(10)
        flight.emit(PullProgress(ref="m", status="downloading"))
        return "snapshot"

    results: list[str] = []
    leader = threading.Thread(target=lambda: results.append(flights.run("m", work)))
    leader.start()
    assert started.wait(10)
    follower = threading.Thread(
        target=lambda: results.append(flights.run("m", work, progress=lambda p: seen.append(p.status)))
    )
    follower.start()
    while len(flights._flights["m"].stops) < 2:  # the follower has joined
        threading.Event().wait(0.01)
    release.set()
    leader.join(10)
    follower.join(10)
    assert results == ["snapshot", "snapshot"]
    assert calls == [1] and flights.leads == 1
    assert seen == ["downloading"]  # the follower saw the leader's progress


def test_errors_reach_every_caller_and_a_later_call_runs_again() -> None:
    flights: SingleFlight[str] = SingleFlight()

    def fail(flight: Flight) -> str:
        raise Timeout("no")

    with pytest.raises(Timeout):
        flights.run("m", fail)
    assert flights.run("m", lambda f: "ok") == "ok" and flights.leads == 2


def test_work_stops_only_when_every_caller_gave_up() -> None:
    flights: SingleFlight[str] = SingleFlight()
    leader_gone, follower_gone = threading.Event(), threading.Event()
    started = threading.Event()
    stopped: list[bool] = []

    def work(flight: Flight) -> str:
        started.set()
        while not flight.should_stop():
            threading.Event().wait(0.01)
        stopped.append(True)
        raise Cancelled("stopped")

    def lead() -> None:
        with pytest.raises(Cancelled):
            flights.run("m", work, should_stop=leader_gone.is_set)

    leader = threading.Thread(target=lead)
    leader.start()
    assert started.wait(10)
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            flights.run("m", work, should_stop=follower_gone.is_set)
        except BaseException as exc:
            errors.append(exc)

    follower = threading.Thread(target=follow)
    follower.start()
    while len(flights._flights["m"].stops) < 2:
        threading.Event().wait(0.01)
    leader_gone.set()  # the follower still wants it: the work goes on
    threading.Event().wait(0.3)
    assert stopped == []
    follower_gone.set()
    follower.join(10)
    leader.join(10)
    assert stopped == [True]
    assert isinstance(errors[0], Cancelled)


def test_lock_file_excludes_other_processes(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "repo.lock"
    path.parent.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, sys
                fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX)
                print("locked", flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        waits: list[bool] = []
        with pytest.raises(Timeout):
            FileLock(path, timeout=0.3, on_wait=lambda: waits.append(True)).acquire()
        assert waits == [True]
        with pytest.raises(Cancelled):
            FileLock(path, timeout=30, should_stop=lambda: True).acquire()
    finally:
        holder.communicate("\n", timeout=10)  # the line that lets it go; waits, closes the pipes
    # The holder is gone (a killed holder releases too): the lock is free.
    with FileLock(path, timeout=5):
        pass
