"""The CLI reference of the manual (docs/cli.md): every command's ``--help`` as plain text.

The help is rendered by click's plain formatter (what ``acme-mv X --help`` prints: no rich
boxes, no colour) at a fixed width, so the text depends only on the code.
docs/cli.md embeds :func:`markdown` through cog (``make docs`` rewrites it, ``make lint``
fails when it is stale), and ``tests/test_docs.py`` fails when a command is missing from it.
"""

from __future__ import annotations

from collections.abc import Iterator

import typer
from typer import _click
from typer.core import TyperCommand, TyperGroup

#: the width of the reference's text: what click prints on a terminal 80 or more columns wide
#: (its default maximum of 80 less its margin of 2)
WIDTH = 78


def walk(
    command: _click.Command, path: tuple[str, ...] = ("acme-mv",)
) -> Iterator[tuple[tuple[str, ...], _click.Command]]:
    """Every visible command under ``command`` (itself first), depth first, in help order."""
    yield path, command
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from walk(sub, (*path, name))


def _plain(command: _click.Command) -> None:
    """Render this command's help with click's formatter instead of rich's."""
    if isinstance(command, TyperCommand | TyperGroup):
        command.rich_markup_mode = None


def _context(command: _click.Command, name: str, parent: _click.Context | None) -> _click.Context:
    """A context like the one ``acme-mv ... --help`` makes (its ``-h``), at the fixed width."""
    _plain(command)
    settings = {**command.context_settings, "max_content_width": WIDTH, "terminal_width": WIDTH}
    return _click.Context(command, info_name=name, parent=parent, **settings)


def help_text(app: typer.Typer, path: tuple[str, ...]) -> str:
    """The plain ``--help`` of the command at ``path`` (``("acme-mv", "cdc", "run")``)."""
    command = typer.main.get_command(app)
    ctx = _context(command, path[0], None)
    for name in path[1:]:
        assert isinstance(command, TyperGroup), f"{' '.join(path)}: {name} has no parent group"
        command = command.commands[name]
        ctx = _context(command, name, ctx)
    text = command.get_help(ctx)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def markdown(app: typer.Typer) -> str:
    """One section per command: a ``### acme-mv ...`` heading and its help in a text block."""
    parts = []
    for path, _command in walk(typer.main.get_command(app)):
        parts.append(f"### {' '.join(path)}\n\n```text\n{help_text(app, path)}```\n")
    return "\n".join(parts)
