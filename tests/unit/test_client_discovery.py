"""The client finds the daemon's config file, and the socket it names, by the daemon's own
rule (``hfd.daemon.settings``), without importing it: both are asked the same questions."""

from __future__ import annotations

from pathlib import Path

import pytest

from hfd.client.discovery import config_file
from hfd.client.paths import socket_candidates
from hfd.daemon.settings import load_settings


def _both(environ: dict[str, str]) -> tuple[tuple[Path | None, Path], tuple[Path | None, Path]]:
    s = load_settings(environ=environ)
    return (config_file(environ), socket_candidates(environ)[0]), (s.config_file, s.ipc_socket())


@pytest.mark.parametrize(
    "toml",
    [
        '[ipc]\npath = "{d}/a.sock"\n',
        '[paths]\nruntime_dir = "{d}/run"\n',
        'runtime_dir = "{d}/top"\n',
        '[paths]\nruntime_dir = "{d}/run"\n[ipc]\npath = "{d}/wins.sock"\n',
        "[http]\nport = 1234\n",  # names no socket: the default rule
    ],
)
def test_a_config_file_in_hfd_config_file(tmp_path: Path, toml: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = tmp_path / "elsewhere.toml"
    path.write_text(toml.format(d=tmp_path))
    client, daemon = _both({"HFD_CONFIG_FILE": str(path), "XDG_RUNTIME_DIR": str(tmp_path)})
    assert client == daemon


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[paths]\nruntime_dir = "{tmp_path}/file"\n')
    env = {"HFD_CONFIG_FILE": str(path), "HFD_RUNTIME_DIR": str(tmp_path / "env")}
    client, daemon = _both(env)
    assert client == daemon and client[1] == tmp_path / "env" / "hfd.sock"


def test_an_ipc_path_wins_over_a_runtime_dir_from_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[ipc]\npath = "{tmp_path}/file.sock"\n')
    env = {"HFD_CONFIG_FILE": str(path), "HFD_RUNTIME_DIR": str(tmp_path / "env")}
    client, daemon = _both(env)
    assert client == daemon and client[1] == tmp_path / "file.sock"


def test_the_user_config_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))  # platformdirs reads os.environ
    (tmp_path / "cfg" / "hfd").mkdir(parents=True)
    (tmp_path / "cfg" / "hfd" / "config.toml").write_text(f'[ipc]\npath = "{tmp_path}/user.sock"\n')
    client, daemon = _both({"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert client == daemon and client[1] == tmp_path / "user.sock"


def test_the_system_service_s_configuration_directory(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(f'[paths]\nruntime_dir = "{tmp_path}/sys"\n')
    env = {"HFD_SYSTEM": "1", "CONFIGURATION_DIRECTORY": str(tmp_path)}
    client, daemon = _both(env)
    assert client == daemon and client[1] == tmp_path / "sys" / "hfd.sock"


def test_no_config_file_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    assert config_file({"XDG_CONFIG_HOME": str(tmp_path / "none")}) is None
