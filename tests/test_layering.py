"""The packages' layering, read from their import statements (every one, at any depth):
the cursor sync and change capture are two modes over one staging core, and neither
imports the other; the core imports neither."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import acme_mv

PACKAGE = Path(acme_mv.__file__).parent

#: package -> the packages none of its modules may import
FORBIDDEN = {
    "acme_mv.cdc": ("acme_mv.sync",),
    "acme_mv.sync": ("acme_mv.cdc",),
    "acme_mv.staging": ("acme_mv.sync", "acme_mv.cdc"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names (relative ones
    resolved), and for ``from p import x`` also ``p.x`` (x may be a module)."""
    module = _module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(package: str) -> list[str]:
    root = PACKAGE.joinpath(*package.split(".")[1:])
    out = []
    for path in sorted(root.rglob("*.py")):
        for name in sorted(imported(path)):
            if any(_within(name, banned) for banned in FORBIDDEN[package]):
                out.append(f"{_module_name(path)} imports {name}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_does_not_import_the_other_modes(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_imports_of_every_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check itself: plain, from, relative and function-level imports are all seen."""
    root = tmp_path / "acme_mv"
    (root / "cdc").mkdir(parents=True)
    (root / "cdc" / "__init__.py").write_text("from ..sync import copy\n", encoding="utf-8")
    (root / "cdc" / "late.py").write_text(
        "def f():\n    import acme_mv.sync.source\n", encoding="utf-8"
    )
    (root / "cdc" / "named.py").write_text("from acme_mv import sync\n", encoding="utf-8")
    (root / "cdc" / "fine.py").write_text("from acme_mv.staging import batch\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", root)
    assert violations("acme_mv.cdc") == [
        "acme_mv.cdc imports acme_mv.sync",
        "acme_mv.cdc imports acme_mv.sync.copy",
        "acme_mv.cdc.late imports acme_mv.sync.source",
        "acme_mv.cdc.named imports acme_mv.sync",
    ]
