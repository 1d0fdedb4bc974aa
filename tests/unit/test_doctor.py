"""``hfd doctor`` lists the engines from the registry's records."""

from __future__ import annotations

import json

import pytest

from hfd.backends import registry
from hfd.backends.hardware import detect, hardware_json
from hfd.daemon.cli.doctor import format_report


def _engine_rows(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Engines") + 2  # past the header row
    return [line.split()[0] for line in lines[start:] if line.startswith("  ") and line.split()][:10]


def test_every_offered_engine_has_a_row_and_the_fake_one_only_when_pinned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(registry.FAKE_ENGINE_ENV, raising=False)
    report = detect()
    text = format_report(report, hardware_json(report))
    rows = _engine_rows(text)
    offered = [r.name for r in registry.RECORDS if r.offered]
    assert rows[: len(offered)] == offered and "fake" not in rows

    pinned = format_report(report, hardware_json(report, pinned_engine="fake"), pinned_engine="fake")
    assert "fake" in _engine_rows(pinned)
    assert "1. fake on cpu: pinned engine" in pinned


def test_the_json_report_has_every_registered_engine() -> None:
    data = json.loads(json.dumps(hardware_json(detect())))
    for name in registry.names():
        assert data[name]["name"] == name
    assert set(data["defaults"]) <= set(registry.names())
