"""The test suite's own rules: test module basenames are unique across the tiers (pytest imports
them by basename: a second one is an import error, or shadows the first), one ``anyio_backend``
fixture (asyncio, in tests/conftest.py) serves every async test, and pytest runs strict: unknown
markers, unexpected passes and warnings fail the run."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import tomllib

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique_across_tiers() -> None:
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def test_one_anyio_backend_fixture() -> None:
    defining = [p for p in TESTS.rglob("*.py") if re.search(r"^\s*def anyio_backend\(", p.read_text(), re.M)]
    assert defining == [TESTS / "conftest.py"]


def test_pytest_is_strict() -> None:
    options = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--strict-markers" in options["addopts"].split()
    assert options["xfail_strict"] is True
    assert options["filterwarnings"][0] == "error"
