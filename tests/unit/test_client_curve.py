"""CURVE keys for ``Client``/``AsyncClient`` on a daemon's TCP endpoint: given as key files or
Z85 strings, checked before anything connects (the handshake itself is tested end to end in
tests/e2e/test_doors_admin.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.auth

from hfd.client import AsyncClient, Client
from hfd.client.curve import curve_keys
from hfd.client.errors import InvalidRequest
from hfd.daemon.access.zap import create_keypair

TCP = "tcp://127.0.0.1:1"


@pytest.fixture
def pairs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {name: create_keypair(tmp_path / name, name) for name in ("server", "alice")}


def test_keys_from_files_and_from_z85_strings_agree(pairs: dict[str, tuple[Path, Path]]) -> None:
    server_file, _ = pairs["server"]
    alice_public_file, alice_secret_file = pairs["alice"]
    from_files = curve_keys(server_file, None, alice_secret_file)
    server_public, _ = zmq.auth.load_certificate(str(server_file))
    alice_public, alice_secret = zmq.auth.load_certificate(str(alice_secret_file))
    assert alice_secret is not None
    from_strings = curve_keys(server_public.decode(), alice_public.decode(), alice_secret.decode())
    assert from_files == from_strings
    assert from_files is not None and from_files.public == alice_public  # derived from the secret
    assert curve_keys(str(server_file), str(alice_public_file), str(alice_secret_file)) == from_files
    assert alice_secret.decode() not in repr(from_files)
    assert curve_keys(None, None, None) is None


def test_bad_keys_are_refused_before_connecting(pairs: dict[str, tuple[Path, Path]]) -> None:
    server_file, _ = pairs["server"]
    _, alice_secret_file = pairs["alice"]
    for client_type in (Client, AsyncClient):
        with pytest.raises(InvalidRequest) as missing:
            client_type(TCP, curve_server_key=server_file)
        assert missing.value.param == "curve_secret_key"
    with pytest.raises(InvalidRequest) as public_only:
        Client(TCP, curve_server_key=server_file, curve_secret_key=server_file)
    assert ".key_secret" in public_only.value.message
    with pytest.raises(InvalidRequest) as garbage:
        Client(TCP, curve_server_key="x" * 12, curve_secret_key=alice_secret_file)
    assert garbage.value.param == "curve_server_key"
    with pytest.raises(InvalidRequest) as not_z85:
        Client(TCP, curve_server_key="~" * 40, curve_secret_key=alice_secret_file)
    assert not_z85.value.param == "curve_server_key"
    with pytest.raises(InvalidRequest) as mismatch:
        Client(
            TCP,
            curve_server_key=server_file,
            curve_public_key=zmq.curve_keypair()[0].decode(),
            curve_secret_key=alice_secret_file,
        )
    assert mismatch.value.param == "curve_public_key"
