from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hfd.daemon.settings import (
    ModelSpec,
    Settings,
    SettingsError,
    load_settings,
    parse_models,
    settings_markdown,
)

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_cli_over_env_over_file_over_default(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.toml", "[http]\nport = 1111\nhost = '127.0.0.2'\n[batching]\nmax_queue = 7\n")
    env = {"HFD_HTTP_PORT": "2222", "HFD_STATE_DIR": str(tmp_path / "s")}
    s = load_settings(cli={"http_port": "3333"}, environ=env, config_file=cfg)
    assert s.http_port == 3333  # CLI wins
    assert s.http_host == "127.0.0.2"  # only in the file
    assert s.max_queue == 7
    assert s.state_dir == tmp_path / "s"  # env
    s = load_settings(environ=env, config_file=cfg)
    assert s.http_port == 2222  # env over file
    s = load_settings(environ={}, config_file=cfg)
    assert s.http_port == 1111
    assert load_settings(environ={}).http_port == 11535  # the documented default


def test_models_from_toml_env_and_cli(tmp_path: Path) -> None:
    cfg = write(
        tmp_path / "c.toml",
        "[[models]]\nref = '/m/a'\nname = 'a'\nkeep_alive = 0\n\n[[models]]\npath = 'org/b@rev'\nalias = 'b'\nengine = 'torch'\n",
    )
    s = load_settings(environ={}, config_file=cfg)
    assert [m.public_name for m in s.models] == ["a", "b"]
    assert s.models[0].keep_alive == 0
    assert s.models[1].ref == "org/b@rev" and s.models[1].engine == "torch"
    s = load_settings(environ={"HFD_MODELS": "x=/m/x, org/y"})
    assert s.models == (ModelSpec(ref="/m/x", name="x"), ModelSpec(ref="org/y"))
    s = load_settings(cli={"models": ["z=/m/z"]}, environ={"HFD_MODELS": "x=/m/x"})
    assert [m.public_name for m in s.models] == ["z"]
    assert s.model("z") is not None and s.model("nope") is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[http]\nport = 'abc'\n", "http_port"),
        ("[http]\nport = 70000\n", "not a port"),
        ("[nope]\nx = 1\n", "unknown setting"),
        ("bogus = 1\n", "unknown setting"),
        ("[[models]]\nname = 'x'\n", "needs 'ref'"),
        ("[[models]]\nref = 'a'\nwat = 1\n", "unknown keys"),
        ("[[models]]\nref = 'a'\n[[models]]\nref = 'a'\n", "unique"),
        ("[daemon]\nlog_format = 'xml'\n", "log_format"),
        ("[batching]\nstream_interval_ms = -1\n", "stream_interval_ms"),
        ("[batching]\nstream_interval_ms = 1001\n", "stream_interval_ms"),
        ("[batching]\nstream_interval_ms = nan\n", "stream_interval_ms"),
        ("not toml [", "c.toml"),
    ],
)
def test_bad_config_is_named(tmp_path: Path, text: str, match: str) -> None:
    cfg = write(tmp_path / "c.toml", text)
    with pytest.raises(SettingsError, match=match):
        load_settings(environ={}, config_file=cfg)


def test_octal_mode_and_bool(tmp_path: Path) -> None:
    s = load_settings(environ={"HFD_IPC_MODE": "0o660", "HFD_HTTP_ENABLED": "false"})
    assert s.ipc_mode == 0o660 and s.http_enabled is False
    with pytest.raises(SettingsError, match="boolean"):
        load_settings(environ={"HFD_HTTP_ENABLED": "maybe"})


def test_system_paths_follow_systemd(tmp_path: Path) -> None:
    env = {"HFD_SYSTEM": "1", "STATE_DIRECTORY": "/var/lib/hfd", "RUNTIME_DIRECTORY": "/run/hfd"}
    s = load_settings(environ=env)
    assert s.state_dir == Path("/var/lib/hfd")
    assert s.cache_dir == Path("/var/cache/hfd")
    assert s.ipc_socket() == Path("/run/hfd/hfd.sock")
    assert s.ipc_endpoint() == "ipc:///run/hfd/hfd.sock"


def test_user_paths_from_platformdirs() -> None:
    s = load_settings(environ={})
    assert "hfd" in str(s.state_dir) and "hfd" in str(s.runtime_dir)


def test_parse_models_forms() -> None:
    assert parse_models("a=/p") == (ModelSpec(ref="/p", name="a"),)
    assert parse_models({"ref": "/p"}) == (ModelSpec(ref="/p"),)


def test_settings_doc_is_current() -> None:
    doc = (ROOT / "docs" / "settings.md").read_text()
    assert doc == settings_markdown(), "run: .venv/bin/python -m hfd.daemon.settings > docs/settings.md"


def test_measure_engines_help_says_pull_measures_only_with_its_export() -> None:
    # hfd pull measures in its export step (daemon/pulls.py): off with export_on_pull = false
    [help_text] = [f.metadata["help"] for f in dataclasses.fields(Settings) if f.name == "measure_engines"]
    assert "only with export_on_pull" in help_text


@pytest.mark.parametrize(
    "text",
    [
        "default_keep_alive = nan\n",
        "default_keep_alive = inf\n",
        '[[models]]\nref = "org/name"\nkeep_alive = -inf\n',
        '[[models]]\nref = "org/name"\nkeep_alive = nan\n',
    ],
)
def test_non_finite_numbers_in_the_config_are_refused(tmp_path: Path, text: str) -> None:
    # TOML has nan and inf; a NaN keep-alive would never expire and break `hfd ps`.
    with pytest.raises(SettingsError, match="finite"):
        load_settings(environ={}, config_file=write(tmp_path / "c.toml", text))
    with pytest.raises(SettingsError, match="finite"):
        load_settings(cli={"default_keep_alive": "1e999"}, environ={})
