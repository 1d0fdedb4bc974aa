"""Plain HTTP beyond loopback is refused unless explicitly allowed, with a log line either way;
and the keep-alive timeout outlasts common clients' idle pool connections."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from support.http_door import make_settings

from hfd.daemon.http.tls import check_plaintext
from hfd.daemon.settings import Settings, SettingsError


def test_plain_http_beyond_loopback_needs_allow_plaintext(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(SettingsError, match="allow_plaintext"):
        check_plaintext(make_settings(tmp_path, http_host="192.168.1.20"))
    assert any(r.levelno == logging.ERROR and "refusing plain HTTP" in r.getMessage() for r in caplog.records)
    caplog.clear()
    check_plaintext(make_settings(tmp_path, http_host="0.0.0.0", http_allow_plaintext=True))
    assert any(
        r.levelno == logging.WARNING and "plain HTTP beyond loopback" in r.getMessage()
        for r in caplog.records
    )
    caplog.clear()
    for settings in (
        make_settings(tmp_path, http_host="127.0.0.1"),
        make_settings(tmp_path, http_host="::1"),
        make_settings(
            tmp_path, http_host="0.0.0.0", http_tls_cert=tmp_path / "c", http_tls_key=tmp_path / "k"
        ),
    ):
        check_plaintext(settings)
    assert not caplog.records


def test_keep_alive_outlasts_client_pools() -> None:
    # httpx (the openai SDK's transport) drops pooled connections after 5 s idle; a server that
    # closes them first races the client's next request on them, which is then lost unanswered.
    assert Settings.__dataclass_fields__["http_keep_alive_timeout"].default > httpx.Limits().keepalive_expiry  # type: ignore[operator]
    assert Settings.__dataclass_fields__["http_keep_alive_timeout"].default > 90  # Go's net/http
