"""The wheel must carry every subpackage, mapped under the single import package `hfd`."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {
    "hfd": "hfd",
    "hfd.daemon": "daemon",
    "hfd.client": "client",
    "hfd.backends": "backends",
    "hfd.ipfs": "ipfs",
}


def source_packages() -> set[str]:
    found = set()
    for name, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    return found


def test_every_package_is_listed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == source_packages()
    assert config["package-dir"] == MAPPED


@pytest.mark.slow
def test_wheel_contains_the_mapped_modules(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("hfd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for pkg in source_packages():
        assert pkg.replace(".", "/") + "/__init__.py" in names, pkg
    assert "hfd/daemon/settings.py" in names
    for static in ("index.html", "app.js", "style.css"):  # the web page's package data
        assert f"hfd/daemon/web/static/{static}" in names, static
    assert not any(n.startswith(("daemon/", "client/", "tests/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "hfd = hfd.daemon.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
