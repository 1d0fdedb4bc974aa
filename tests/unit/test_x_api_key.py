"""``x-api-key``, how Anthropic's SDK sends its key, is an hfd key like ``Authorization:
Bearer``: checked where keys are required, and a revoked one refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.client.errors import Unauthorized
from hfd.daemon.access.auth import Authenticator
from hfd.daemon.access.keys import KeyStore
from hfd.daemon.settings import Settings, load_settings


def settings_for(tmp_path: Path, **cli: object) -> Settings:
    return load_settings(cli={"state_dir": tmp_path, "runtime_dir": tmp_path / "run", **cli}, environ={})


def test_x_api_key_is_a_key_where_keys_are_required(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    _, secret = store.create("anthropic-sdk")
    auth = Authenticator(settings_for(tmp_path, auth_required="true"), store)
    store.refresh(force=True)
    principal = auth.http(None, secret)
    assert principal.kind == "key" and principal.name == "anthropic-sdk"
    with pytest.raises(Unauthorized):
        auth.http(None, "hfd-not-a-key")
    with pytest.raises(Unauthorized):
        auth.http(None, None)
    # A bearer token, when sent, is the one checked.
    with pytest.raises(Unauthorized):
        auth.http("Bearer hfd-not-a-key", secret)


def test_x_api_key_placeholder_is_anonymous_on_loopback(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    auth = Authenticator(settings_for(tmp_path), store)
    assert auth.http(None, "sk-ant-placeholder").kind == "anonymous"
    _, secret = store.create("k")
    store.refresh(force=True)
    assert auth.http(None, secret).kind == "key"
    store.revoke("k")
    store.refresh(force=True)
    with pytest.raises(Unauthorized, match="revoked"):
        auth.http(None, secret)
