"""The SQL files of ``views/``, one statement (or fragment) per file, grouped by layer.

::

    views/state/      how a batch maintains staging.orders_state / order_items_state (sync.apply)
    views/deltas/     <summary>.sql: a batch's signed change per group -> analytics.<summary>_delta
    views/summaries/  <summary>.sql: the summary from
    scratch over the state tables (--rebuild, verify)
    views/reports/    analytics.<view>.sql: the views the readers query (pinned by the migrations)

A file is a header of ``--`` comment lines, then the SQL. Header lines of the
form ``-- key: value`` with a known ``key`` are read (:data:`HEADER_KEYS`);
the other comment lines are for people. The text is loaded once per process
(:func:`load` is cached) and handed to ``psycopg.sql.SQL`` by its callers:
placeholders in braces (``{temp}``, ``{keys}``) are identifiers or fragments
composed with ``psycopg.sql``, values are ``%(name)s`` parameters. See
docs/extending.md for the naming rule of each layer and the lineage of every report.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

from acme_mv import paths

#: the header keys read from a file (others are prose)
HEADER_KEYS = frozenset({"kind", "unique", "keys", "counts", "view", "report"})

_HEADER = re.compile(r"^--\s*(?P<key>[a-z_]+)\s*:\s*(?P<value>.*?)\s*$")


@dataclass(frozen=True)
class SqlFile:
    """One file of ``views/``: its path relative to ``views/``, header fields and SQL text."""

    name: str
    text: str
    headers: dict[str, str] = field(default_factory=dict)
    #: the header's other comment lines, joined: what the file is, for people
    comment: str = ""

    @property
    def layer(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def stem(self) -> str:
        """``state/orders_state.first.sql`` -> ``orders_state.first``."""
        return self.name.rsplit("/", 1)[-1].removesuffix(".sql")

    @property
    def first_sentence(self) -> str:
        return re.split(r"(?<=\.)\s", self.comment, maxsplit=1)[0]


def parse(text: str, *, name: str) -> SqlFile:
    """Split a file's text into its header fields and its SQL (without surrounding blank lines)."""
    headers: dict[str, str] = {}
    comment: list[str] = []
    lines = text.splitlines()
    start = 0
    while start < len(lines) and lines[start].startswith("--"):
        header = _HEADER.match(lines[start])
        if header is not None and header["key"] in HEADER_KEYS:
            headers[header["key"]] = header["value"]
        else:
            comment.append(lines[start].removeprefix("--").strip())
        start += 1
    body = "\n".join(lines[start:]).strip()
    if not body:
        raise ValueError(f"{name}: no SQL after the header")
    return SqlFile(name=name, text=body, headers=headers, comment=" ".join(comment))


@functools.cache
def load(name: str) -> SqlFile:
    """``views/<name>`` (e.g. ``"deltas/open_orders.sql"``), read once per process."""
    path = paths.views_dir() / name
    return parse(path.read_text(encoding="utf-8"), name=name)


def text(name: str) -> str:
    """The SQL of ``views/<name>``."""
    return load(name).text


def layer(name: str, *, fragments: bool = False) -> list[SqlFile]:
    """Every file of one layer (``"deltas"``), sorted by name; its fragments (``_*.sql``) too
    with ``fragments=True``."""
    folder: Path = paths.views_dir() / name
    return [
        load(f"{name}/{p.name}")
        for p in sorted(folder.glob("*.sql"))
        if fragments or not p.name.startswith("_")
    ]
