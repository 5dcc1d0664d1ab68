"""Where the Alembic scripts and the view SQL are, installed or in a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_INSTALLED = PACKAGE_DIR / "_data"
_CHECKOUT = PACKAGE_DIR.parent


def data_root() -> Path:
    """The folder holding ``alembic.ini``, ``migrations/`` and ``views/``."""
    if (_INSTALLED / "alembic.ini").exists():
        return _INSTALLED
    return _CHECKOUT


def alembic_ini() -> Path:
    return data_root() / "alembic.ini"


def migrations_dir() -> Path:
    return data_root() / "migrations"


def views_dir() -> Path:
    return data_root() / "views"
