"""``scripts/bench``: one entry point, the other benchmarks as its subcommands (``--help`` only:
no daemon starts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "scripts" / "bench"
SUBCOMMANDS = ("pull", "soak", "engines", "cache", "usage", "ollama")


def _help(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCH), *args, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_help_lists_every_subcommand() -> None:
    out = _help()
    for name in SUBCOMMANDS:
        assert f"\n  {name} " in out, name
    assert not list((REPO / "scripts").glob("bench_*.py")), "a benchmark outside scripts/bench"


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_answers_to_its_name(name: str) -> None:
    assert _help(name).startswith(f"usage: scripts/bench {name} ")


def test_the_older_flags_still_reach_their_subcommands() -> None:
    assert _help("--pull").startswith("usage: scripts/bench pull ")
    assert _help("--soak").startswith("usage: scripts/bench soak ")
