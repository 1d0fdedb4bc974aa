"""The client finds the daemon's socket by the same rule the daemon binds it
(``Settings.ipc_socket()``), without importing the daemon."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from hfd.client.paths import default_endpoint, default_socket, normalize_endpoint, socket_candidates
from hfd.daemon.settings import load_settings


def daemon_socket(environ: dict[str, str]) -> Path:
    return load_settings(environ=environ).ipc_socket()


@pytest.fixture
def xdg(tmp_path: Path) -> Path:
    # platformdirs only accepts an XDG_RUNTIME_DIR that is private to the user.
    d = tmp_path / "xdg"
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    return d


@pytest.mark.parametrize(
    "environ",
    [
        {"HFD_IPC_PATH": "/srv/x/daemon.sock"},
        {"HFD_IPC_PATH": "/srv/x/daemon.sock", "HFD_RUNTIME_DIR": "/elsewhere"},
        {"HFD_RUNTIME_DIR": "/srv/run-hfd"},
        {"HFD_SYSTEM": "1"},
        {"HFD_SYSTEM": "1", "RUNTIME_DIRECTORY": "/run/hfd-alt:/run/other"},
        {"RUNTIME_DIRECTORY": "/run/user/1000/hfd-unit"},
    ],
)
def test_first_candidate_is_where_the_daemon_binds(environ: dict[str, str]) -> None:
    assert socket_candidates(environ)[0] == daemon_socket(environ)


def test_user_runtime_dir_from_xdg(xdg: Path) -> None:
    environ = {"XDG_RUNTIME_DIR": str(xdg)}
    candidates = socket_candidates(environ)
    assert candidates[0] == xdg / "hfd" / "hfd.sock"
    # platformdirs may refuse an XDG_RUNTIME_DIR (its owner, mode or parents) and fall back;
    # wherever it lands, the client looks there too.
    assert daemon_socket(environ) in candidates


def test_without_xdg_the_daemons_choice_is_among_the_candidates() -> None:
    environ: dict[str, str] = {}
    assert daemon_socket(environ) in socket_candidates(environ)
    # And the system service is always the last resort for a user.
    assert socket_candidates(environ)[-1] == Path("/run/hfd/hfd.sock")


def test_an_existing_socket_wins_over_the_first_guess(xdg: Path, tmp_path: Path) -> None:
    environ = {"XDG_RUNTIME_DIR": str(xdg)}
    first = socket_candidates(environ)[0]
    assert default_socket(environ) == first  # nothing exists yet: the most likely place
    # A user unit's socket ($RUNTIME_DIRECTORY) only exists when that daemon runs.
    unit_env = {"RUNTIME_DIRECTORY": str(tmp_path / "unit")}
    (tmp_path / "unit").mkdir()
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "unit" / "hfd.sock"))
    try:
        assert default_socket(unit_env) == tmp_path / "unit" / "hfd.sock"
        assert default_endpoint(unit_env) == f"ipc://{tmp_path / 'unit' / 'hfd.sock'}"
    finally:
        listener.close()


def test_endpoint_forms() -> None:
    assert normalize_endpoint("/tmp/a.sock") == "ipc:///tmp/a.sock"
    assert normalize_endpoint("ipc:///tmp/b.sock") == "ipc:///tmp/b.sock"
    assert normalize_endpoint("tcp://127.0.0.1:5555") == "tcp://127.0.0.1:5555"
    assert normalize_endpoint("~/x.sock") == f"ipc://{Path.home() / 'x.sock'}"
    assert normalize_endpoint(None).startswith("ipc://")
