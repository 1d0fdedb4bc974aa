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
    assert f"hfd {command}" in out and "--http-port" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"hfd {__version__}"


def test_bad_setting_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "--http-port", "nope"]) == 2
    assert "http_port" in capsys.readouterr().err
