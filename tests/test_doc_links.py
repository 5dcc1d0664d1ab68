"""The README and docs/ point only at files inside this repository, and those exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: a path named in a document: a markdown link target or a backticked repository path
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)")
_PATH = re.compile(
    r"`(?P<path>(?:\.\./|\./)?(?:docs|tests|views|acme_mv|migrations|benchmarks)/[\w./-]*\w)`"
)
_OUTSIDE = re.compile(r"(?<![\w.])\.\./[\w.-]+")
#: the kinds of file a document refers to as part of the repository (not build
#: outputs such as ``benchmarks/results/latest.json`` or the wheel's ``acme_mv/_data``)
SOURCE_SUFFIXES = {".md", ".py", ".sql", ".yml", ".toml"}


def named_paths(text: str) -> list[str]:
    links = [m["target"] for m in _LINK.finditer(text) if "://" not in m["target"]]
    return links + [m["path"] for m in _PATH.finditer(text)]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_document_points_outside_the_repository(doc: Path) -> None:
    outside = _OUTSIDE.findall(doc.read_text(encoding="utf-8"))
    assert not outside, f"{doc.name} points outside the repository: {outside}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_file_a_document_names_exists(doc: Path) -> None:
    paths = [
        p for p in named_paths(doc.read_text(encoding="utf-8")) if Path(p).suffix in SOURCE_SUFFIXES
    ]
    missing = [p for p in paths if not (doc.parent / p).exists() and not (ROOT / p).exists()]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def test_the_checks_see_what_they_look_for() -> None:
    text = "see `../shared/contract.md`, [x](docs/nope.md) and `views/analytics.open_orders.sql`"
    assert _OUTSIDE.findall(text) == ["../shared"]
    assert named_paths(text) == ["docs/nope.md", "views/analytics.open_orders.sql"]
