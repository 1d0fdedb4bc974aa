"""`hfd pull | ls | show | rm | publish | export | import` through the real command line entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.models import tiny_bert
from support.store_env import closed_port

from hfd.daemon.cli import main


def _flags(tmp: Path) -> list[str]:
    return [
        "--state-dir", str(tmp / "state"),
        "--store-use-hf-cache", "false",
        "--hub-offline", "true",
        "--ipfs-api", f"/ip4/127.0.0.1/tcp/{closed_port()}",
        "--log-format", "json",
    ]  # fmt: skip


def test_export_import_ls_show_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = _flags(tmp_path)
    bundle = tmp_path / "bert.tar"
    assert main(["export", str(tiny_bert()), "-o", str(bundle), "--repo", "acme/tiny-bert", *flags]) == 0
    assert "exported acme/tiny-bert@" in capsys.readouterr().out

    assert main(["import", str(bundle), *flags]) == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (path / "config.json").is_file() and "models--acme--tiny-bert" in str(path)

    assert main(["ls", *flags]) == 0
    out = capsys.readouterr().out
    assert "acme/tiny-bert@main" in out and "bundle" in out and "embed" in out

    assert main(["show", "acme/tiny-bert", "--json", *flags]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["repo"] == "acme/tiny-bert" and shown["source"] == "bundle" and shown["task"] == "embed"
    assert {f["path"] for f in shown["files"]} >= {"config.json", "model.safetensors"}
    assert all(len(f["sha256"]) == 64 for f in shown["files"])

    assert main(["show", "acme/tiny-bert", *flags]) == 0
    assert "sha256:" in capsys.readouterr().out

    assert main(["pull", "acme/tiny-bert", *flags]) == 0  # already stored: no source needed
    assert capsys.readouterr().out.strip() == str(path)

    assert main(["rm", "acme/tiny-bert", *flags]) == 0
    assert "freed" in capsys.readouterr().out
    assert main(["ls", "--json", *flags]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_errors_are_one_line_with_their_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = _flags(tmp_path)
    assert main(["pull", "acme/absent", *flags]) == 1
    err = capsys.readouterr().err
    assert "[model_not_found]" in err and "acme/absent" in err and "Hub" in err and "Traceback" not in err
    assert main(["publish", str(tiny_bert()), *flags]) == 1
    assert "unreachable" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "nope.tar"), *flags]) == 1
    assert "[validation_error]" in capsys.readouterr().err
    assert main(["rm", "acme/absent", *flags]) == 1
