"""The manual's examples as tests: find them, run them, compare what they print.

Blocks are found with markdown-it-py (the CommonMark parser rich already depends on), so a
fence inside a list or a quote is found as a reader's Markdown viewer shows it. By language:

- ``console``: shell sessions. A line ``$ command`` (continued by a trailing ``\\``) is run by
  bash in a scratch directory; the lines after it, up to the next ``$``, are what it prints
  (stdout and stderr, as on a terminal), compared by :class:`doctest.OutputChecker` with
  ``ELLIPSIS`` (``...`` stands for any text) and ``NORMALIZE_WHITESPACE``. Every command must
  exit 0: an example of a failure shows it with ``; echo "exit $?"``. The commands of one
  block run in one bash process, so an ``export`` holds for the rest of the block.
- ``pycon``: Python sessions (``>>>``), run by :mod:`doctest`; the blocks of one page share
  their names, in page order.

The other languages (``text``, ``sql``, ``ini``, ``json``, ``yaml``) are shown, not run.
A page states the databases its examples start from in an HTML comment, which a reader does
not see: ``<!-- examples: source=sample warehouse=empty -->`` (``source``: ``none``, ``empty``
(the four tables, no rows) or ``sample`` (a small sample history); ``warehouse``: ``empty`` or
``migrated``; ``smtp=yes``: an SMTP server, in ``ACME_MV_SMTP_URL``; ``cwd=checkout``: the
commands run in a copy of the repository, whose ``.venv`` is the suite's own, installed, so that
``make demo`` there runs the installed ``acme-mv``, on an embedded server of its own, with a cache
directory of its own). A page without the comment has no runnable examples.
"""

from __future__ import annotations

import doctest
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

#: the languages whose blocks are run
RUN = ("console", "pycon")
#: the languages whose blocks are shown only
SHOWN = ("text", "sql", "ini", "json", "yaml", "")
_SETUP = re.compile(r"<!--\s*examples:(?P<settings>[^>]*)-->")
_MARKER = "@@acme-mv-doc-example"
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass(frozen=True)
class Command:
    line: int
    command: str
    expected: str


@dataclass(frozen=True)
class Ran:
    command: Command
    output: str
    exit_code: int

    def matches(self) -> bool:
        return doctest.OutputChecker().check_output(self.command.expected, self.output, _FLAGS)


def blocks(path: Path) -> Iterator[Block]:
    for token in MarkdownIt("commonmark").parse(path.read_text()):
        if token.type == "fence" and token.map is not None:
            lang = token.info.split()[0] if token.info.strip() else ""
            yield Block(path, token.map[0] + 1, lang, token.content)


def setup(path: Path) -> dict[str, str] | None:
    """The page's ``<!-- examples: ... -->`` settings; None when it has none."""
    found = _SETUP.search(path.read_text())
    if found is None:
        return None
    return dict(item.split("=", 1) for item in found["settings"].split())


def commands(block: Block) -> list[Command]:
    """The ``$`` commands of a console block, each with the output shown under it."""
    found: list[Command] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if found or lines[i].strip():
                raise ValueError(f"{block}: output before the first `$ ` command")
            i += 1
            continue
        start, parts = i, [lines[i][2:]]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        text = "\n".join(expected).strip("\n")
        found.append(Command(block.line + 1 + start, "\n".join(parts), text + "\n" if text else ""))
    return found


def run_console(block: Block, *, env: dict[str, str], cwd: Path, timeout: float = 300) -> list[Ran]:
    """Run a console block's commands in one bash process; what each printed, and its exit."""
    cmds = commands(block)
    script = ["exec 2>&1"]
    for n, c in enumerate(cmds):
        script += [f"printf '%s\\n' '{_MARKER} start {n}'", c.command, f"echo '{_MARKER} end' $?"]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    ran: list[Ran] = []
    pattern = re.compile(
        rf"^{_MARKER} start (\d+)\n(.*?)\n?^{_MARKER} end (\d+)$", re.MULTILINE | re.DOTALL
    )
    for m in pattern.finditer(done.stdout):
        output = m[2] + "\n" if m[2] else ""
        ran.append(Ran(cmds[int(m[1])], output, int(m[3])))
    if len(ran) != len(cmds):
        raise AssertionError(
            f"{block}: {len(ran)} of {len(cmds)} commands finished; bash printed:\n{done.stdout}"
        )
    return ran


def doctests(block: Block, globs: dict[str, object]) -> doctest.TestResults:
    """Run a pycon block with ``globs`` (shared by the page's blocks); failures are printed."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, globs, str(block), str(block.path), block.line)
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    runner.run(test, clear_globs=False)
    return runner.summarize(verbose=False)
