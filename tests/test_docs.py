"""The manual's shape: every command is in the CLI reference, every page is in the index,
the README links the index and stays a landing page.

Whether the generated parts are current is ``make lint``'s check (``cog --check``); these
tests catch what a current but incomplete generator would miss.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import typer
from typer.core import TyperGroup

from acme_mv import embedded
from acme_mv.cli import app, reference
from acme_mv.delivery import mail

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
#: a landing page: what it is, the two commands, the picture, install, production, links
README_MAX_LINES = 200
_LINK = re.compile(r"\]\((?P<target>[^)#\s]+)")


def command_paths(command: object, path: str = "acme-mv") -> Iterator[str]:
    """``acme-mv``, ``acme-mv sync``, ``acme-mv cdc run``...: every visible command, walked here
    independently of the generator."""
    yield path
    if isinstance(command, TyperGroup):
        for name, sub in command.commands.items():
            if not sub.hidden:
                yield from command_paths(sub, f"{path} {name}")


def headings(page: Path) -> set[str]:
    return {
        line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")
    }


def links(page: Path) -> set[str]:
    return {m["target"] for m in _LINK.finditer(page.read_text()) if "://" not in m["target"]}


def test_every_command_has_its_help_in_the_cli_reference() -> None:
    commands = list(command_paths(typer.main.get_command(app)))
    assert {"acme-mv", "acme-mv sync", "acme-mv cdc run", "acme-mv sample load"} <= set(commands)
    reference = (DOCS / "cli.md").read_text()
    documented = headings(DOCS / "cli.md")
    missing = [c for c in commands if c not in documented]
    assert not missing, f"docs/cli.md has no section for {missing}: run `make docs`"
    for command in commands:
        assert f"Usage: {command} " in reference, f"docs/cli.md lacks the --help of {command}"


def test_the_walk_sees_subcommands() -> None:
    probe = typer.Typer()
    group = typer.Typer()
    group.command("leaf")(lambda: None)
    group.command("hidden", hidden=True)(lambda: None)
    probe.add_typer(group, name="group")
    probe.command("top")(lambda: None)
    assert sorted(command_paths(typer.main.get_command(probe), "p")) == [
        "p",
        "p group",
        "p group leaf",
        "p top",
    ]


def test_every_page_of_the_manual_is_in_its_index() -> None:
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    listed = {Path(target).name for target in links(DOCS / "index.md")}
    assert pages, "no pages in docs/"
    missing = sorted(pages - listed)
    assert not missing, f"docs/index.md does not link {missing}"


def test_the_readme_links_the_manual() -> None:
    assert "docs/index.md" in links(README)


def test_the_readme_stays_a_landing_page() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail to docs/"
    )


def test_the_configuration_reference_names_what_the_program_reads() -> None:
    read = {mail.SMTP_URL_ENV, mail.SMTP_PASSWORD_ENV, mail.SMTP_CAFILE_ENV, embedded.CACHE_ENV}
    assert set(reference.ENVIRONMENT_ONLY) == read
    table = reference.environment(app)
    for var in ("ACME_MV_DATABASE_URL", "ACME_MV_SOURCE_URL", "ACME_MV_MAIL_AT", *read):
        assert f"| `{var}` |" in table, var
