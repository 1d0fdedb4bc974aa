"""The project metadata uses setuptools' current configuration, so an install prints no
deprecation warnings about it: ``project.license`` is an SPDX expression (not the old table)
and the license text is named by ``project.license-files``."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_license_is_an_spdx_expression_with_its_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] and all((ROOT / f).is_file() for f in project["license-files"])
    assert "Apache License" in (ROOT / "LICENSE").read_text()


def test_the_build_requires_a_setuptools_that_reads_it() -> None:
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    (setuptools,) = [r for r in build["requires"] if r.startswith("setuptools")]
    assert int(setuptools.split(">=")[1].split(".")[0]) >= 77
