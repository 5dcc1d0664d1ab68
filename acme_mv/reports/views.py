"""Views as values: one object per ``views/reports/<schema>.<name>.sql`` file.

A :class:`View` is a plain value (schema, name, kind, definition, unique index
columns). It is loaded from a file or from the database and rendered to the
statements that create or drop it; a materialized view's CREATE includes its
UNIQUE index (``NULLS NOT DISTINCT``, PostgreSQL >= 15), without which
``REFRESH MATERIALIZED VIEW CONCURRENTLY`` refuses to run.

A file is the SELECT of the object after a header of ``--`` comment lines; two
header lines are read::

    -- kind: materialized          (or: view)
    -- unique: delivery_date, status

Migrations never read today's ``views/``: each pins a copy under
``migrations/sql/<revision>/`` (see docs/reports.md), and
:func:`replace_view` replaces a view in one migration: its dependants dropped,
the view replaced, the dependants recreated (a materialized view of a pinned
revision with its unique index, which ``REFRESH ... CONCURRENTLY`` needs). The
grants on every object it drops (``acme-mv grant-reader``'s, a DBA's) are
re-applied to the recreated objects (:func:`save_grants`, :func:`restore_grants`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from acme_mv import paths, sqlfiles

if TYPE_CHECKING:
    from acme_mv.db import Conn

Kind = Literal["view", "materialized"]

_NAME = re.compile(r"^(?P<schema>[a-z_][a-z0-9_]*)\.(?P<name>[a-z_][a-z0-9_]*)$")


class Executor(Protocol):
    """Anything that runs one SQL string: Alembic's ``op``, a psycopg connection."""

    def execute(self, sqltext: str, /) -> object: ...


@dataclass(frozen=True, kw_only=True)
class View:
    """A view or materialized view as a value."""

    schema: str
    name: str
    kind: Kind
    definition: str
    unique: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def index_name(self) -> str:
        """The name of a materialized view's unique index."""
        return f"{self.name}_key"

    @classmethod
    def from_sql(cls, text: str, *, qualified: str) -> View:
        """Parse a view file's text; ``qualified`` is ``schema.name``."""
        match = _NAME.match(qualified)
        if match is None:
            raise ValueError(f"{qualified!r} is not a lower-case schema.name")
        parsed = sqlfiles.parse(text, name=qualified)  # the header format of every file of views/
        kind = parsed.headers.get("kind", "view")
        unique = tuple(c.strip() for c in parsed.headers.get("unique", "").split(",") if c.strip())
        if kind not in ("view", "materialized"):
            raise ValueError(f"{qualified}: kind must be view or materialized, not {kind!r}")
        if kind == "materialized" and not unique:
            raise ValueError(
                f"{qualified}: a materialized view needs a `-- unique: col, ...` header"
            )
        definition = parsed.text.rstrip(";").strip()
        return cls(
            schema=match["schema"],
            name=match["name"],
            kind="view" if kind == "view" else "materialized",
            definition=definition,
            unique=unique,
        )

    @classmethod
    def from_file(cls, path: Path) -> View:
        """``views/reports/analytics.open_orders.sql`` -> the view ``analytics.open_orders``."""
        return cls.from_sql(
            path.read_text(encoding="utf-8"), qualified=path.name.removesuffix(".sql")
        )

    @classmethod
    def from_database(cls, conn: Conn, schema: str, name: str) -> View:
        """The object as the database holds it (definition as ``pg_get_viewdef`` prints it)."""
        row = conn.execute(_FROM_DATABASE, {"schema": schema, "name": name}).fetchone()
        if row is None:
            raise LookupError(
                f"{schema}.{name} is not a view or materialized view in this database"
            )
        relkind, definition, unique = row
        return cls(
            schema=schema,
            name=name,
            kind="materialized" if relkind == "m" else "view",
            definition=str(definition).strip().rstrip(";").strip(),
            unique=tuple(unique or ()),  # NULL: no unique index
        )

    def create(self) -> list[str]:
        """The statements that create this object (and a materialized view's unique index)."""
        from psycopg import sql

        ident = sql.Identifier(self.schema, self.name)
        body = sql.SQL(self.definition)  # the view's own text, from a pinned file
        if self.kind == "view":
            return [sql.SQL("CREATE VIEW {} AS\n{}").format(ident, body).as_string()]
        return [
            sql.SQL("CREATE MATERIALIZED VIEW {} AS\n{}\nWITH DATA")
            .format(ident, body)
            .as_string(),
            self.create_index(),
        ]

    def create_index(self) -> str:
        """``CREATE UNIQUE INDEX ... NULLS NOT DISTINCT``: what REFRESH CONCURRENTLY needs."""
        from psycopg import sql

        if self.kind != "materialized":
            raise ValueError(f"{self.qualified} is a plain view: it has no index")
        return (
            sql.SQL("CREATE UNIQUE INDEX {} ON {} ({}) NULLS NOT DISTINCT")
            .format(
                sql.Identifier(self.index_name),
                sql.Identifier(self.schema, self.name),
                sql.SQL(", ").join(sql.Identifier(c) for c in self.unique),
            )
            .as_string()
        )

    def drop(self) -> str:
        """``DROP [MATERIALIZED] VIEW`` (its index goes with it)."""
        from psycopg import sql

        what = "MATERIALIZED VIEW" if self.kind == "materialized" else "VIEW"
        return (
            sql.SQL("DROP {} {}")
            .format(sql.SQL(what), sql.Identifier(self.schema, self.name))
            .as_string()
        )

    def references(self, other: View) -> bool:
        """Whether this object's definition names ``other``."""
        return (
            re.search(rf"\b{re.escape(other.schema)}\.{re.escape(other.name)}\b", self.definition)
            is not None
        )


_FROM_DATABASE = """
SELECT c.relkind::text,
       pg_get_viewdef(c.oid, true),
       (SELECT array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_index AS i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum = k.attnum
        WHERE i.indexrelid = (SELECT min(i2.indexrelid) FROM pg_index AS i2
                              WHERE i2.indrelid = c.oid AND i2.indisunique AND i2.indpred IS NULL
                                AND i2.indexprs IS NULL))
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND c.relkind IN ('v', 'm')
"""


def load_dir(directory: Path | None = None) -> list[View]:
    """Every ``<schema>.<name>.sql`` in ``directory``
    (default: ``views/reports/``), in dependency order."""
    folder = directory or paths.views_dir() / "reports"
    return dependency_order(View.from_file(p) for p in sorted(folder.glob("*.sql")))


def dependency_order(views: Iterable[View]) -> list[View]:
    """Views sorted so that each comes after every view it references (stable by name)."""
    pending = sorted(views, key=lambda v: v.qualified)
    done: list[View] = []
    while pending:
        ready = [v for v in pending if not any(v is not o and v.references(o) for o in pending)]
        if not ready:
            raise ValueError(f"circular references among {', '.join(v.qualified for v in pending)}")
        done.extend(ready)
        pending = [v for v in pending if v not in ready]
    return done


def dependants_of(view: View, views: Sequence[View]) -> list[View]:
    """Every view in ``views`` that reads ``view``
    directly or through another, in creation order."""
    found: list[View] = []
    for candidate in dependency_order(views):
        if candidate != view and any(candidate.references(v) for v in [view, *found]):
            found.append(candidate)
    return found


def create_all(executor: Executor, views: Sequence[View]) -> None:
    for view in dependency_order(views):
        for statement in view.create():
            executor.execute(statement)


def drop_all(executor: Executor, views: Sequence[View]) -> None:
    for view in reversed(dependency_order(views)):
        executor.execute(view.drop())


def replace_view(executor: Executor, old: View, new: View, dependants: Sequence[View]) -> None:
    """Replace ``old`` by ``new`` inside the caller's migration (one transaction).

    Dropping a view drops every view that reads it (and a materialized view of
    a pinned revision its unique index: a later ``REFRESH ... CONCURRENTLY``
    then fails). So: drop the dependants (last created first), drop ``old``,
    create ``new`` (with its unique index when materialized), recreate the
    dependants. ``dependants`` are pinned values too; pass every object that
    reads ``old`` directly or indirectly.

    A dropped object loses its grants (a report reader could no longer read
    the report), so the grants of ``old`` and of every dependant are saved
    first and given again to the recreated objects.
    """
    if old.qualified != new.qualified:
        raise ValueError(f"cannot replace {old.qualified} by a different object {new.qualified}")
    executor.execute(save_grants([old, *dependants]))
    drop_all(executor, dependants)
    executor.execute(old.drop())
    create_all(executor, [new])
    create_all(executor, dependants)
    executor.execute(RESTORE_GRANTS)


#: a temporary table (dropped at commit) holding the GRANT statements that
#: recreate the grants of objects about to be dropped; SQL only, so that a
#: migration rendered offline (``acme-mv migrate --sql``) keeps them too
GRANTS_TABLE = "acme_mv_saved_grants"

_SAVE_GRANTS = """
CREATE TEMPORARY TABLE IF NOT EXISTS {table} (statement text NOT NULL) ON COMMIT DROP;
INSERT INTO {table} (statement)
SELECT 'GRANT ' || a.privilege_type || ' ON TABLE '
       || quote_ident(n.nspname) || '.' || quote_ident(c.relname)
       || ' TO ' || CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                         ELSE quote_ident(pg_get_userbyid(a.grantee)) END
       || CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
CROSS JOIN LATERAL aclexplode(c.relacl) AS a
WHERE (n.nspname, c.relname) IN ({names}) AND a.grantee <> c.relowner
"""

#: the owner's own privileges come with the new object; the rest is re-granted
RESTORE_GRANTS = (
    "DO $$DECLARE s text; BEGIN "
    "FOR s IN SELECT statement FROM pg_temp.acme_mv_saved_grants LOOP EXECUTE s; END LOOP; "
    "DELETE FROM pg_temp.acme_mv_saved_grants; END$$"
)


def save_grants(objects: Sequence[View]) -> str:
    """The statement that saves the grants on ``objects`` for :data:`RESTORE_GRANTS`.

    Only grants to other roles are saved (the owner's come with a new object),
    table-level ones (a column-level grant on a view is not kept).
    """
    from psycopg import sql

    names = sql.SQL(", ").join(
        sql.SQL("({}, {})").format(sql.Literal(v.schema), sql.Literal(v.name)) for v in objects
    )
    return (
        sql.SQL(_SAVE_GRANTS)
        .format(table=sql.Identifier("pg_temp", GRANTS_TABLE), names=names)
        .as_string()
    )
