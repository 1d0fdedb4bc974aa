"""``hfd keys create NAME`` (and the older ``--name``) and ``hfd stats``'s labels, through the
real command line in-process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hfd.daemon.access.keys import KeyStore
from hfd.daemon.access.usage import UsageLog, UsageRecord
from hfd.daemon.cli import main


def _names(state: Path) -> list[str]:
    store = KeyStore(state)
    return sorted(k.name for k in store.list_keys())


def test_keys_create_takes_the_name_as_an_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "laptop", "--state-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip()  # the key, shown once
    assert main(["keys", "create", "--name", "older", "--state-dir", str(tmp_path)]) == 0
    assert _names(tmp_path) == ["laptop", "older"]


def test_keys_create_without_a_name_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--state-dir", str(tmp_path)]) == 2
    assert "NAME" in capsys.readouterr().err
    assert main(["keys", "create", "a", "--name", "b", "--state-dir", str(tmp_path)]) == 2


def _record(model: str | None) -> UsageRecord:
    return UsageRecord(
        ts=time.time(),
        request_id="r",
        door="http",
        key="k",
        model=model,  # type: ignore[arg-type]
        route="/metrics",
        status=200,
        prompt_tokens=0,
        completion_tokens=0,
        latency_ms=1.0,
    )


def test_stats_labels_requests_that_named_no_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = UsageLog(tmp_path)
    log.record(_record("chat"))
    log.record(_record(None))
    log.record(_record(""))
    log.flush()
    log.close()
    assert main(["stats", "--state-dir", str(tmp_path)]) == 0
    rows = capsys.readouterr().out.splitlines()
    body = [r for r in rows[1:] if not r.startswith("TOTAL")]
    assert body and all(r.split()[0] in ("chat", "(none)") for r in body), rows
    assert any(r.startswith("(none)") for r in body)
