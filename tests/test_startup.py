"""Start-up: each command loads only what it uses.

``import acme_mv.cli`` (what every command, and ``--help``, pays) loads no
migration tool, no ORM, no web server, no metrics client and no change capture;
they load inside the commands that use them. Checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory

from acme_mv import defaults, migrate, revision
from acme_mv.staging.tables import TABLES

#: modules (and their submodules) that ``import acme_mv.cli`` must not load
NOT_AT_START = (
    "alembic",
    "sqlalchemy",
    "psycopg2",
    "starlette",
    "prometheus_client",
    "acme_mv.cdc",
)


def _loaded_by(statement: str) -> set[str]:
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in NOT_AT_START))


def test_importing_the_cli_loads_none_of_the_heavy_modules() -> None:
    assert _heavy(_loaded_by("import acme_mv.cli")) == []


@pytest.mark.parametrize("module", ["alembic", "acme_mv.cdc"])
def test_the_check_sees_a_heavy_module(module: str) -> None:
    """The check itself: a heavy module loaded is reported."""
    assert module in _heavy(_loaded_by(f"import acme_mv.cli, {module}"))


def test_the_revisions_read_without_alembic_are_alembics() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert revision.head_revision() == script.get_current_head()
    assert revision.known_revisions() == {s.revision for s in script.walk_revisions()}


def test_the_help_defaults_are_the_modules() -> None:
    """The source tables the help names are the ones staging describes, in the same order."""
    assert tuple(TABLES) == defaults.TABLE_NAMES
