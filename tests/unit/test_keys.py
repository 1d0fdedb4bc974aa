"""API keys in a real DuckDB file: hashed at rest, scopes and model lists, and a second
process (the CLI) creating and revoking keys that the first one sees at once."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from support.daemon import run_hfd

from hfd.client.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from hfd.daemon.access.auth import Authenticator, Principal, keys_required, scope_for_http, scope_for_ipc
from hfd.daemon.access.keys import KeyStore, hash_key
from hfd.daemon.settings import SettingsError, load_settings


def settings_for(tmp_path: Path, **cli: object):  # type: ignore[no-untyped-def]
    return load_settings(cli={"state_dir": tmp_path, "runtime_dir": tmp_path / "run", **cli}, environ={})


def test_created_key_is_stored_hashed_and_found(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, secret = store.create("app", scopes="inference,models", models=["a", "b"], rpm=10, tpm=1000)
    assert secret.startswith(f"hfd-{key.id}-") and len(secret) > 40
    raw = (tmp_path / "keys.duckdb").read_bytes()
    assert secret.encode() not in raw, "the key itself must never be written"
    con = duckdb.connect(str(tmp_path / "keys.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT key_hash FROM api_keys").fetchall() == [(hash_key(secret),)]
    finally:
        con.close()

    reader = KeyStore(tmp_path)
    reader.refresh()
    found = reader.lookup(secret)
    assert found is not None
    assert (found.name, found.scopes, found.models, found.rpm, found.tpm) == (
        "app",
        frozenset({"inference", "models"}),
        frozenset({"a", "b"}),
        10,
        1000,
    )
    assert reader.lookup(secret + "x") is None
    assert reader.lookup("sk-something-else") is None


def test_bad_key_requests_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(InvalidRequest, match="unknown scope"):
        store.create("x", scopes="inference,root")
    with pytest.raises(InvalidRequest, match="name"):
        store.create("  ")
    with pytest.raises(InvalidRequest, match="negative"):
        store.create("x", rpm=-1)
    store.create("dup")
    with pytest.raises(InvalidRequest, match="exists"):
        store.create("dup")
    with pytest.raises(NotFound):
        store.revoke("nope")


def test_revocation_in_another_process_is_seen_at_once(tmp_path: Path) -> None:
    daemon_view = KeyStore(tmp_path)
    _, secret = KeyStore(tmp_path).create("ci")
    assert daemon_view.changed()
    daemon_view.refresh()
    assert daemon_view.lookup(secret) is not None
    assert not daemon_view.changed()

    # The CLI, as its own process, while this one keeps its store object.
    out = run_hfd("keys", "revoke", "ci", "--state-dir", str(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert daemon_view.changed()
    daemon_view.refresh()
    assert daemon_view.lookup(secret) is None
    listed = KeyStore(tmp_path).list_keys(include_revoked=True)
    assert [k.name for k in listed] == ["ci"] and listed[0].revoked_at is not None
    assert KeyStore(tmp_path).list_keys() == []


def test_cli_create_prints_the_key_once(tmp_path: Path) -> None:
    create = ("keys", "create", "--name", "n1", "--models", "m1", "--rpm", "3")
    out = run_hfd(*create, "--state-dir", str(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip()
    listing = run_hfd("keys", "list", "--state-dir", str(tmp_path), timeout=60)
    assert "n1" in listing.stdout and secret not in listing.stdout
    store = KeyStore(tmp_path)
    store.refresh()
    key = store.lookup(secret)
    assert key is not None and key.models == frozenset({"m1"}) and key.rpm == 3


def test_principal_scopes_and_model_lists(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, _ = store.create("one-model", models=["chat"])
    p = Principal.from_key(key)
    p.require("inference", "chat")
    with pytest.raises(Forbidden, match="model 'other'"):
        p.require("inference", "other")
    with pytest.raises(Forbidden, match="models"):
        p.require("models", "chat")
    assert scope_for_http("POST", "/v1/chat/completions") == "inference"
    assert scope_for_http("POST", "/api/load") == "models"
    assert scope_for_http("GET", "/health") is None
    assert scope_for_http("GET", "/metrics") == "admin"
    assert scope_for_http("GET", "/metrics", metrics_public=True) is None
    assert scope_for_http("POST", "/api/something-new") == "admin"
    assert scope_for_ipc("chat.completions.create") == "inference"
    assert scope_for_ipc("models.pull") == "models"
    assert scope_for_ipc("made.up") == "admin"


def test_loopback_rule(tmp_path: Path) -> None:
    assert not keys_required(settings_for(tmp_path))
    assert not keys_required(settings_for(tmp_path, http_host="::1"))
    assert keys_required(settings_for(tmp_path, http_host="0.0.0.0"))
    assert not keys_required(settings_for(tmp_path, http_host="0.0.0.0", auth_required="false"))
    assert keys_required(settings_for(tmp_path, auth_required="true"))
    with pytest.raises(SettingsError, match="auth_required"):
        settings_for(tmp_path, auth_required="maybe")


def test_keys_required_without_keys_refuses_to_start(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, http_host="0.0.0.0")
    auth = Authenticator(settings, KeyStore(tmp_path))
    with pytest.raises(SettingsError, match="hfd keys create"):
        auth.check_startup()
    _, secret = KeyStore(tmp_path).create("k")
    auth.check_startup()
    with pytest.raises(Unauthorized):
        auth.http(None)
    with pytest.raises(Unauthorized):
        auth.http("Bearer sk-placeholder")
    assert auth.http(f"Bearer {secret}").name == "k"


def test_loopback_accepts_placeholder_keys_but_not_revoked_ones(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    auth = Authenticator(settings_for(tmp_path), store)
    auth.check_startup()
    assert auth.http(None).kind == "anonymous"
    assert auth.http("Bearer sk-no-key-required").kind == "anonymous"
    _, secret = store.create("k")
    store.refresh()
    assert auth.http(f"Bearer {secret}").kind == "key"
    store.revoke("k")
    store.refresh()
    with pytest.raises(Unauthorized, match="revoked"):
        auth.http(f"Bearer {secret}")
