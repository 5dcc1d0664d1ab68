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


#: settings that only the environment carries (no option does), and what each is
ENVIRONMENT_ONLY: dict[str, str] = {
    "ACME_MV_SMTP_URL": "where and how `mail` and the daily mail connect: `smtp://` (STARTTLS), "
    "`smtps://` (TLS), `smtp+insecure://` (plain), with the user: `smtp://user@host:587`",
    "ACME_MV_SMTP_PASSWORD": "the SMTP password (or a `~/.netrc` line for the host; "
    "never in the URL)",
    "ACME_MV_SMTP_CAFILE": "a PEM file of CA certificates to trust for the SMTP server",
    "ACME_MV_CACHE_DIR": "where the embedded PostgreSQL (`demo`, the tests) keeps its data "
    "(default `$XDG_CACHE_HOME/acme-mv` or `~/.cache/acme-mv`)",
}


def _first_sentence(text: str | None) -> str:
    text = " ".join((text or "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def environment(app: typer.Typer) -> str:
    """The configuration reference: every ``ACME_MV_*`` variable, the option it stands for (an
    option given on the command line wins), the commands that read it, and what it is; generated
    from the options' ``envvar`` and :data:`ENVIRONMENT_ONLY`."""
    found: dict[str, tuple[str, list[str], str]] = {}
    for path, command in walk(typer.main.get_command(app)):
        for param in command.params:
            envvar = param.envvar
            names: list[str] = [envvar] if isinstance(envvar, str) else list(envvar or [])
            for var in names:
                option = max(param.opts, key=len)
                where = " ".join(path[1:]) or "every command"
                meaning = _first_sentence(getattr(param, "help", ""))
                _, commands, _ = found.setdefault(var, (f"`{option}`", [], meaning))
                commands.append(where)
    rows = [
        f"| `{var}` | {option} | {', '.join(commands)} | {meaning} |"
        for var, (option, commands, meaning) in sorted(found.items())
    ]
    rows += [f"| `{var}` | - | - | {meaning} |" for var, meaning in ENVIRONMENT_ONLY.items()]
    return (
        "| variable | option | commands | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def metrics() -> str:
    """The metrics ``acme-mv run --metrics-port`` serves, read from a fresh registry."""
    from acme_mv.run.metrics import Metrics

    rows = []
    for family in Metrics().registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = sorted({k for s in family.samples for k in s.labels if k != "le"})
        shown = f"{name}{{{','.join(labels)}}}" if labels else name
        rows.append(f"| `{shown}` | {family.type} | {family.documentation} |")
    return "| metric | type | meaning |\n|---|---|---|\n" + "\n".join(rows) + "\n"
