from __future__ import annotations

import argparse

import pytest

from hfd import __version__
from hfd.daemon.cli import build_parser, main


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices)


def test_every_documented_command_is_registered() -> None:
    expected = {
        "serve",
        "ps",
        "embed",
        "run",
        "load",
        "tune",
        "unload",
        "pull",
        "ls",
        "show",
        "rm",
        "publish",
        "export",
        "import",
        "doctor",
        "keys",
        "stats",
        "version",
    }
    assert expected <= set(commands())


@pytest.mark.parametrize("command", commands())
def test_help_renders_for_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"hfd {command}" in out
    # The daemon's settings are serve's (and doctor's, which checks them); not a client's.
    assert ("--http-port" in out) == (command in ("serve", "doctor"))


@pytest.mark.parametrize("command", ["ps", "run", "embed", "load", "unload", "stats", "version"])
def test_client_commands_help_is_short(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 40, out
    assert "--max-running" not in out and "--cache-max-bytes" not in out


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from dataclasses import fields

    from hfd.daemon.settings import Settings

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for f in fields(Settings):
        flag = "--model" if f.name == "models" else "--" + f.name.replace("_", "-")
        assert flag in out, flag


def test_store_commands_keep_the_store_s_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pull", "--help"])
    out = capsys.readouterr().out
    for flag in ("--state-dir", "--hub-endpoint", "--ipfs-api", "--store-use-hf-cache", "--log-format"):
        assert flag in out
    assert "--http-port" not in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"hfd {__version__}"


def test_bad_setting_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--http-port", "nope"]) == 2
    assert "http_port" in capsys.readouterr().err
