"""docs/extending.md: its generated lineage (cog) is what the registry and view files say now."""

from __future__ import annotations

import shutil
from pathlib import Path

from cogapp import Cog

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "extending.md"


def _cog_check(path: Path) -> int:
    return int(Cog().main(["cog", "--check", str(path)]))


def test_the_generated_lineage_is_current() -> None:
    assert _cog_check(DOC) == 0, "docs/extending.md is stale: run `cog -r docs/extending.md`"


def test_a_stale_lineage_is_caught(tmp_path: Path) -> None:
    stale = tmp_path / "extending.md"
    shutil.copy(DOC, stale)
    text = stale.read_text(encoding="utf-8")
    assert "| `top_dates` (top 3 by default) |" in text
    stale.write_text(text.replace("(top 3 by default)", "(top 5 by default)"), encoding="utf-8")
    assert _cog_check(stale) != 0
