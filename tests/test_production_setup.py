"""The README's "Production" section, executed as written.

Its SQL blocks (the same as docs/deploy-cursor-sync.md's "Roles") create three
non-superuser roles with passwords; the test server is made to require those
passwords (``conftest.require_passwords``). Then, as those roles only:
migrate, grant-reader, sync, refresh, export; the exports equal the reports
computed from scratch on the source. Also: libpq's TLS options in a URL reach
libpq unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from acme_mv import migrate
from acme_mv.config import Settings
from acme_mv.db import connection
from acme_mv.errors import ConnectionFailed
from acme_mv.sample import load as sample_load
from tests.support.cli_runner import Result, run
from tests.support.database import DatabaseFactory
from tests.support.reports_oracle import FROM_SCRATCH
from tests.support.roles import drop_role, require_passwords

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OPERATIONS = ROOT / "docs" / "deploy-cursor-sync.md"

#: the roles the documented SQL creates: source reader, warehouse owner, report reader
SOURCE_ROLE, WAREHOUSE_ROLE, READER_ROLE = "acme_mv_source", "acme_mv", "acme_reports"
ROLES = (SOURCE_ROLE, WAREHOUSE_ROLE, READER_ROLE)
#: the top reports export 3 rows by default
TOP_LIMIT = 3
SAMPLE_ORDERS = 400


def section(path: Path, heading: str) -> str:
    """The text of the ``## heading`` section (up to the next ``## ``)."""
    text = path.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"{path.name} has no section '## {heading}'"
    return match.group(1)


def sql_blocks(text: str) -> list[str]:
    return re.findall(r"^```sql\n(.*?)^```", text, flags=re.M | re.S)


def readme_setup_sql(where: str) -> str:
    """The README's block that starts ``-- On the <where> database``."""
    found = [
        b
        for b in sql_blocks(section(README, "Production"))
        if b.startswith(f"-- On the {where} database")
    ]
    assert len(found) == 1, f"README.md, Production: {len(found)} SQL blocks for the {where}"
    return found[0]


def password_in(block: str, role: str) -> str:
    match = re.search(rf"CREATE ROLE {role} LOGIN PASSWORD '([^']+)'", block)
    assert match, f"the setup SQL creates no role {role} with a password"
    return match.group(1)


def test_the_readme_shows_the_operations_guides_setup_sql() -> None:
    readme = sql_blocks(section(README, "Production"))
    guide = sql_blocks(section(OPERATIONS, "Roles"))
    assert len(readme) == 2
    assert readme == guide


def test_the_setup_sql_never_makes_a_superuser_or_grants_on_public() -> None:
    statements = "\n".join(
        line
        for line in (readme_setup_sql("source") + readme_setup_sql("warehouse")).splitlines()
        if not line.startswith("--")
    )
    assert not re.search(
        r"SUPERUSER|CREATEDB|CREATEROLE|BYPASSRLS|REPLICATION", statements, flags=re.I
    )
    assert "public" not in statements.lower()
    assert "ALL" not in statements.upper().split()  # no GRANT ALL, no ON ALL TABLES


#: advisory lock key: the tests that create the documented (cluster-wide) roles run one at a time
ROLES_LOCK = 0x61636D66


@pytest.fixture
def production_roles(server_url: str) -> Iterator[None]:
    """The documented role names are cluster-wide: one test at a time, leftovers of a crashed run
    dropped."""
    with psycopg.connect(server_url, autocommit=True) as lock:
        lock.execute("SELECT pg_advisory_lock(%s)", (ROLES_LOCK,))
        for role in ROLES:
            drop_role(server_url, role)
        try:
            yield
        finally:
            for role in ROLES:
                drop_role(server_url, role)
            lock.execute("SELECT pg_advisory_unlock(%s)", (ROLES_LOCK,))


def run_ok(*argv: str, secrets: tuple[str, ...]) -> Result:
    res = run(*argv)
    assert res.exit_code == 0, f"acme-mv {' '.join(argv)}: {res.stderr}"
    for secret in secrets:
        assert secret not in res.stdout + res.stderr
    return res


def from_scratch_csv(source_superuser: str, report: str) -> str:
    query = FROM_SCRATCH[report] + (f" LIMIT {TOP_LIMIT}" if report.startswith("top_") else "")
    out = bytearray()
    with psycopg.connect(source_superuser) as conn:
        conn.execute("SET DateStyle = 'ISO, YMD'")
        with conn.cursor().copy(
            sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER)").format(sql.SQL(query))
        ) as copy:
            for block in copy:
                out += bytes(block)
    return out.decode()


def test_the_readme_production_setup_works_as_written(
    server_url: str,
    make_db: DatabaseFactory,
    production_roles: None,
    cli_env: Callable[..., None],
    tmp_path: Path,
) -> None:
    source, warehouse = make_db("empty"), make_db("empty")
    with psycopg.connect(source) as conn:  # the source application's data, made by its owner
        sample_load.load(conn, orders=SAMPLE_ORDERS, seed=8)
    source_sql, warehouse_sql = readme_setup_sql("source"), readme_setup_sql("warehouse")
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(source_sql.encode())
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(warehouse_sql.encode())

    require_passwords(server_url, *ROLES)
    passwords = {
        SOURCE_ROLE: password_in(source_sql, SOURCE_ROLE),
        WAREHOUSE_ROLE: password_in(warehouse_sql, WAREHOUSE_ROLE),
        READER_ROLE: password_in(warehouse_sql, READER_ROLE),
    }
    for role, db in ((SOURCE_ROLE, source), (WAREHOUSE_ROLE, warehouse), (READER_ROLE, warehouse)):
        with pytest.raises(psycopg.OperationalError):  # the password is really required
            psycopg.connect(make_conninfo(db, user=role, password="not-" + passwords[role])).close()
    with psycopg.connect(server_url) as conn:
        rows = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s) AND NOT rolsuper AND NOT "
            "rolcreatedb AND NOT rolcreaterole AND rolcanlogin",
            (list(ROLES),),
        ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(ROLES)

    source_url = make_conninfo(source, user=SOURCE_ROLE, password=passwords[SOURCE_ROLE])
    warehouse_url = make_conninfo(
        warehouse, user=WAREHOUSE_ROLE, password=passwords[WAREHOUSE_ROLE]
    )
    reader_url = make_conninfo(warehouse, user=READER_ROLE, password=passwords[READER_ROLE])
    secrets = tuple(passwords.values())

    cli_env(database_url=warehouse_url, source_url=source_url)
    run_ok("migrate", secrets=secrets)
    run_ok("grant-reader", READER_ROLE, secrets=secrets)
    synced = run_ok("sync", secrets=secrets)
    assert "pg_read_all_stats" not in synced.stderr  # the grant works: no fallback lag
    run_ok("refresh", secrets=secrets)

    out = tmp_path / "reports"
    out.mkdir()
    cli_env(database_url=reader_url)
    run_ok("export", "--all", "--output-dir", str(out), secrets=secrets)
    exported = {p.name.split("_result_")[0]: p.read_text() for p in out.iterdir()}
    assert exported == {report: from_scratch_csv(source, report) for report in FROM_SCRATCH}

    with psycopg.connect(warehouse) as conn:
        owners = conn.execute(
            "SELECT DISTINCT n.nspname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND c.relkind "
            "<> 'i' AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE "
            "'pg_toast_temp%%' ORDER BY 1"
        ).fetchall()
    assert owners == [
        ("acme_mv", WAREHOUSE_ROLE),
        ("analytics", WAREHOUSE_ROLE),
        ("staging", WAREHOUSE_ROLE),
    ]
    with psycopg.connect(reader_url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM staging.orders")


def test_the_old_readme_setup_fails_with_one_short_line(
    server_url: str, make_db: DatabaseFactory, production_roles: None, cli_env: Callable[..., None]
) -> None:
    """A warehouse role with no schema of its own (PostgreSQL 15: no CREATE on public either)."""
    warehouse = make_db("empty")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE acme_mv LOGIN PASSWORD 'change-me-warehouse'")
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")  # PostgreSQL 15's default
    require_passwords(server_url, WAREHOUSE_ROLE)
    cli_env(
        database_url=make_conninfo(warehouse, user=WAREHOUSE_ROLE, password="change-me-warehouse")
    )
    res = run("migrate")
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert len(lines[0]) < 300, lines[0]
    assert "permission denied for database" in lines[0]
    assert "must own the schemas acme_mv, staging and analytics" in lines[0]
    assert "CREATE" not in lines[0] and "change-me-warehouse" not in res.stderr


def with_params(url: str, **params: str) -> str:
    """``url`` with libpq options added the way a user would write them."""
    if url.startswith(("postgresql://", "postgres://")):
        return url + ("&" if "?" in url else "?") + "&".join(f"{k}={v}" for k, v in params.items())
    return make_conninfo(url, **params)


@pytest.mark.parametrize("mode", ["disable", "prefer"])
def test_libpq_tls_options_in_the_url_reach_libpq(
    warehouse_url: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL's sslmode wins over PGSSLMODE: acme-mv hands the URL to libpq as it is."""
    monkeypatch.setenv("PGSSLMODE", "require")  # would show up if the URL's option were dropped
    url = with_params(warehouse_url, sslmode=mode, sslrootcert="/etc/acme-mv/root.crt")
    settings = Settings.from_env(database_url=url)
    with connection(settings.database_url, role="warehouse") as conn:
        params = conn.info.get_parameters()
    # libpq lists only options that differ from its defaults, and prefer is the default
    assert params.get("sslmode") == (None if mode == "prefer" else mode)
    assert params.get("sslrootcert") == "/etc/acme-mv/root.crt"
    migrate.upgrade(url)  # Alembic's connection is made from the same URL


def test_an_invalid_sslmode_is_refused_by_libpq_in_one_line(warehouse_url: str) -> None:
    with pytest.raises(
        ConnectionFailed,
        match=r'^Cannot connect to the warehouse .*invalid sslmode value: "sometimes"$',
    ):
        connection(with_params(warehouse_url, sslmode="sometimes"), role="warehouse").__enter__()
