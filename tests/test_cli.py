from __future__ import annotations

import re
import shlex

import pytest
import typer.main

from acme_mv import __version__
from acme_mv.cli import app
from tests.support.cli_runner import run


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


def examples(help_text: str) -> list[str]:
    """The command lines of a help page's ``Example:``/``Examples:`` section."""
    lines = [line.strip().strip("│").strip() for line in help_text.splitlines()]
    for at, line in enumerate(lines):
        heading = re.match(r"Examples?:\s*(?P<inline>.*)$", line)
        if heading is None:
            continue
        found = [heading["inline"]] if heading["inline"] else []
        for following in lines[at + 1 :]:
            if following.startswith("╭"):  # the options box: the description is over
                break
            if following.startswith("acme-mv"):
                found.append(following)
        return found
    return []


def command_words(line: str) -> list[str]:
    """A shell line's first simple command (``acme-mv migrate --sql > x.sql`` -> acme-mv migrate
    --sql)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set("<>|&;()"):
            break
        words.append(token)
    return words


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "acme-mv")
def test_every_command_has_help_with_a_working_example(path: list[str]) -> None:
    """Each help page shows at least one example of that very command, and every example parses."""
    res = run(*path, "--help")
    assert res.exit_code == 0, res.stderr
    assert "Usage" in res.stdout
    found = examples(res.stdout)
    name = " ".join(["acme-mv", *path])
    assert found, f"`{name} --help` has no Example: section"
    for example in found:
        argv = command_words(example)
        assert argv[: len(path) + 1] == ["acme-mv", *path], (
            f"`{name} --help` shows an example of another command: {example}"
        )
        parsed = run(*argv[1:], "--help")  # unknown commands or options fail here, before --help
        assert parsed.exit_code == 0, (
            f"`{name} --help` example `{example}` does not parse: {parsed.stderr}"
        )


def test_the_example_checks_can_fail() -> None:
    assert examples("Usage: acme-mv sync [OPTIONS]\n\n Copy rows.\n╭─ Options ─╮\n") == []
    assert examples(" Examples:\n\n   acme-mv sync --full\n╭─ Options\n   acme-mv x\n") == [
        "acme-mv sync --full"
    ]
    assert command_words("acme-mv migrate --sql > warehouse.sql") == ["acme-mv", "migrate", "--sql"]
    assert run("sync", "--ful", "--help").exit_code == 2  # a typo in an example is caught


def test_unknown_command_is_a_usage_error() -> None:
    res = run("no-such-command")
    assert res.exit_code == 2
    assert "Traceback" not in res.stderr
