"""The background imports: transformers waits for the loads that do not need it (a warm start's),
but not for long, and not once something waits for it."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from hfd.backends import preload as preload_module


@pytest.fixture
def preload(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """A fresh copy of the module's state, its imports replaced by a record of when they ran."""
    fresh = importlib.reload(preload_module)
    imported: list[float] = []
    monkeypatch.setattr(fresh, "_engines", lambda spare: None)
    monkeypatch.setattr(fresh, "_import_transformers", lambda: imported.append(time.monotonic()))
    fresh.imported = imported  # type: ignore[attr-defined]
    yield fresh
    importlib.reload(preload_module)  # the next test (and the daemon code) start unstarted


def test_transformers_waits_for_a_warm_load_to_end(preload: ModuleType) -> None:
    with preload.warm_load():
        preload.start()
        time.sleep(0.5)
        assert preload.imported == []  # held back while the load runs
        ended = time.monotonic()
    assert preload._transformers.wait(3)
    assert preload.imported[0] >= ended


def test_a_load_that_needs_transformers_gets_it_at_once(preload: ModuleType) -> None:
    with preload.warm_load():  # a first load: no record yet, it reads through transformers
        preload.start()
        started = time.monotonic()
        preload.wait_for_transformers()
        assert time.monotonic() - started < preload._DEFER_S / 2
    assert len(preload.imported) == 1


def test_a_load_that_never_ends_holds_it_back_no_longer_than_the_limit(
    preload: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preload, "_DEFER_S", 0.3)
    hold = threading.Event()

    def a_long_load() -> None:
        with preload.warm_load():
            hold.wait(5)

    holder = threading.Thread(target=a_long_load)
    holder.start()
    time.sleep(0.1)
    preload.start()
    assert preload._transformers.wait(3)
    hold.set()
    holder.join(5)


def test_a_hung_engines_step_delays_a_load_that_waits_no_longer_than_the_limit(
    preload: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(preload, "_WAIT_S", 0.3)
    hung = threading.Event()
    monkeypatch.setattr(preload, "_engines", lambda spare: hung.wait(10))  # a probe that hangs
    preload.start()
    started = time.monotonic()
    with caplog.at_level("WARNING", logger=preload.__name__):
        preload.wait_for_transformers()
    assert time.monotonic() - started < 5
    assert len(preload.imported) == 1  # imported by the waiting load itself
    assert "importing transformers for the load" in caplog.text
    hung.set()
    assert preload._transformers.wait(5)
