from __future__ import annotations

import pytest
import typer.main

from acme_mv import __version__
from acme_mv.cli import app
from tests.cli_runner import run


def _all_commands() -> list[list[str]]:
    root = typer.main.get_command(app)
    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        found.append(path)
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(root, [])
    return found


def test_version() -> None:
    res = run("--version")
    assert res.exit_code == 0
    assert __version__ in res.stdout


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "acme-mv")
def test_every_command_has_help_with_an_example(path: list[str]) -> None:
    res = run(*path, "--help")
    assert res.exit_code == 0, res.stderr
    assert "Usage" in res.stdout
    if path:
        assert "acme-mv " in res.stdout, f"no example in `acme-mv {' '.join(path)} --help`"


def test_unknown_command_is_a_usage_error() -> None:
    res = run("no-such-command")
    assert res.exit_code == 2
    assert "Traceback" not in res.stderr
