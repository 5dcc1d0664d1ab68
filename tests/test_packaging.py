"""What the wheel promises besides code: one version, and type information."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import acme_mv

ROOT = Path(__file__).resolve().parent.parent


def test_the_version_is_defined_once_in_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert metadata.version("acme-mv") == acme_mv.__version__


def test_the_package_is_marked_typed() -> None:
    assert (Path(acme_mv.__file__).parent / "py.typed").is_file()
