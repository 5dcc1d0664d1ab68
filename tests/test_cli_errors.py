"""Bad connection input: one clear line, non-zero exit, no traceback, no secret."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from acme_mv.cli.common import hoist_global_options
from acme_mv.db import privilege_needed
from tests.support.cli_runner import child_env, run, run_subprocess

WRONG = "not-the-password-x9"


def _assert_one_clean_line(res_stderr: str, *secrets: str) -> None:
    lines = [ln for ln in res_stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res_stderr
    assert "Traceback" not in res_stderr
    for secret in secrets:
        assert secret not in res_stderr


def test_unreachable_server() -> None:
    res = run("--database-url", f"postgresql://bob:{WRONG}@127.0.0.1:1/acme", "migrate")
    assert res.exit_code == 1
    assert "Cannot connect to the warehouse" in res.stderr
    _assert_one_clean_line(res.stderr, WRONG)


def test_wrong_password(password_role_url: str) -> None:
    with psycopg.connect(password_role_url) as conn:  # the right password works
        conn.execute("SELECT 1")
    bad = make_conninfo(password_role_url, password=WRONG)
    with pytest.raises(psycopg.OperationalError):  # the server really checks it
        psycopg.connect(bad).close()
    res = run("--database-url", bad, "migrate")
    assert res.exit_code == 1
    assert "password authentication failed" in res.stderr
    _assert_one_clean_line(res.stderr, WRONG)


def test_missing_database(server_url: str) -> None:
    res = run("--database-url", make_conninfo(server_url, dbname="acme_no_such_db"), "migrate")
    assert res.exit_code == 1
    assert "acme_no_such_db" in res.stderr
    _assert_one_clean_line(res.stderr)


def test_malformed_url() -> None:
    res = run("--database-url", f"host=db password={WRONG} 'oops", "migrate")
    assert res.exit_code == 1
    assert "not a valid PostgreSQL URL" in res.stderr
    _assert_one_clean_line(res.stderr, WRONG)


def test_unknown_timezone() -> None:
    res = run("--timezone", "Mars/Base", "migrate", "--sql")
    assert res.exit_code == 1
    assert "Mars/Base" in res.stderr


# --- usage errors: one line, exit 2 ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(
            ["export", "no_such_report"], "Unknown report 'no_such_report'", id="unknown_report"
        ),
        pytest.param(["sync", "--table", "nope"], "Unknown table 'nope'", id="unknown_table"),
        pytest.param(
            ["export", "open_orders", "--format", "xml"],
            "Unknown format 'xml'",
            id="unknown_format",
        ),
        pytest.param(
            ["refresh", "--historic", "--current"],
            "one of --historic, --current and --rebuild",
            id="historic_and_current",
        ),
        pytest.param(
            ["run", "--interval", "soon"], "--interval: 'soon' is not a duration", id="bad_interval"
        ),
        pytest.param(
            ["run", "--full-every", "weekly"], "--full-every: 'weekly'", id="bad_full_every"
        ),
        pytest.param(["status", "--max-age", "old"], "--max-age: 'old'", id="bad_max_age"),
        pytest.param(
            ["run", "--max-backoff", "1s1s"], "--max-backoff: '1s1s'", id="bad_max_backoff"
        ),
        pytest.param(
            ["sync", "--fallback-lag", "-5"], "--fallback-lag: '-5'", id="bad_fallback_lag"
        ),
        pytest.param(
            ["sync", "--lock-timeout", "1e3"], "--lock-timeout: '1e3'", id="bad_lock_timeout"
        ),
        pytest.param(
            ["serve", "--stale-after", "1 week"], "--stale-after: '1 week'", id="bad_stale_after"
        ),
        pytest.param(["cdc", "run", "--heartbeat", "ms"], "--heartbeat: 'ms'", id="bad_heartbeat"),
        pytest.param(
            ["cdc", "run", "--heartbeat", "50ms"],
            "--heartbeat must be at least 0.1s",
            id="short_heartbeat",
        ),
        pytest.param(["demo", "--simulate", "soon"], "--simulate: 'soon'", id="bad_demo_simulate"),
        pytest.param(
            ["sample", "simulate", "--duration", "5 minutes"],
            "--duration: '5 minutes'",
            id="bad_simulate_duration",
        ),
        pytest.param(["export", "top_dates", "--limit", str(10**20)], "--limit", id="huge_limit"),
        pytest.param(["export", "top_dates", "--limit", "0"], "--limit", id="zero_limit"),
        pytest.param(["--log-format", "xml", "status"], "--log-format", id="bad_log_format"),
        pytest.param(["sync", "--no-such-option"], "No such option", id="unknown_option"),
        pytest.param(["run", "--batch-ms", "50"], "only applies with --cdc", id="tuning_no_cdc"),
        pytest.param(["run", "--cdc", "--batch-rows", "0"], "--batch-rows", id="zero_batch"),
        pytest.param(
            ["run", "--cdc", "--interval", "5s"],
            "--interval does not apply to --cdc",
            id="interval_with_cdc",
        ),
        pytest.param(
            ["run", "--cdc", "--once", "--full-every", "1d"],
            "--once, --full-every do not apply to --cdc",
            id="cycle_options_with_cdc",
        ),
        pytest.param(["run", "--slot", "s1"], "--slot only applies with --cdc", id="slot_no_cdc"),
        pytest.param(["no-such-command"], "No such command", id="unknown_command"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    db_url: str, cli_env: Callable[..., None], args: list[str], needle: str
) -> None:
    cli_env(database_url=db_url)
    res = run(*args)
    assert res.exit_code == 2, res.stderr
    assert needle in res.stderr
    _assert_one_clean_line(res.stderr)
    assert "Unexpected error" not in res.stderr


# --- permission errors name the missing grant --------------------------------------------


@pytest.fixture
def reader_url(db_url: str) -> Iterator[str]:
    """A login role with a password and CONNECT only: no USAGE, no SELECT."""
    role = f"acme_noread_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(WRONG)
            )
        )
    try:
        yield make_conninfo(db_url, user=role, password=WRONG)
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_missing_table_grant_is_one_line_naming_it(db_url: str, reader_url: str) -> None:
    role = psycopg.conninfo.conninfo_to_dict(reader_url)["user"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA operations TO {}").format(sql.Identifier(str(role)))
        )
        conn.execute(
            sql.SQL(
                "GRANT SELECT ON operations.orders, operations.order_items, "
                "operations.products TO {}"
            ).format(sql.Identifier(str(role)))
        )
    # a subprocess: a sync as this role warns once per process about pg_read_all_stats, and
    # tests/test_sync.py expects that warning in its own process
    res = run_subprocess(
        "sync", "--database-url", db_url, "--source-url", reader_url, env=child_env()
    )
    assert res.exit_code == 1, res.stderr
    (error,) = [
        ln for ln in res.stderr.splitlines() if ln.startswith("Error: ")
    ]  # (a WARNING about pg_stat_activity may come first)
    assert f"GRANT SELECT ON TABLE operations.customers TO {role}" in error
    assert (
        "Permission denied on the source" in error
        and "permission denied for table customers" in error
    )
    assert "Traceback" not in res.stderr and WRONG not in res.stderr


def test_a_missing_view_grant_on_the_warehouse_is_one_line(
    db_url: str, reader_url: str, cli_env: Callable[..., None]
) -> None:
    run("--database-url", db_url, "refresh")
    role = psycopg.conninfo.conninfo_to_dict(reader_url)["user"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA analytics TO {}").format(sql.Identifier(str(role)))
        )
        # every command checks the revision first: the grants of that part are there
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA acme_mv TO {}").format(sql.Identifier(str(role)))
        )
        conn.execute(
            sql.SQL("GRANT SELECT ON acme_mv.alembic_version TO {}").format(
                sql.Identifier(str(role))
            )
        )
    cli_env(database_url=reader_url)
    res = run("export", "open_orders", "--output", "-")
    assert res.exit_code == 1, res.stderr
    assert "Permission denied on the warehouse" in res.stderr and f"TO {role}" in res.stderr
    assert re.search(r"GRANT SELECT ON (TABLE|VIEW) \S+", res.stderr), res.stderr
    _assert_one_clean_line(res.stderr, WRONG)


# --- export: directories ------------------------------------------------------------------


def test_export_output_onto_a_directory_is_one_clear_line(
    db_url: str, cli_env: Callable[..., None], tmp_path: Path
) -> None:
    cli_env(database_url=db_url)
    assert run("refresh").exit_code == 0
    res = run("export", "open_orders", "--output", str(tmp_path), "--force")
    assert res.exit_code == 1
    assert f"{tmp_path} is a directory" in res.stderr and "Unexpected" not in res.stderr
    _assert_one_clean_line(res.stderr)
    assert tmp_path.is_dir()


def test_export_output_dir_is_created(
    db_url: str, cli_env: Callable[..., None], tmp_path: Path
) -> None:
    cli_env(database_url=db_url)
    assert run("refresh").exit_code == 0
    target = tmp_path / "a" / "b"
    res = run("export", "--all", "--output-dir", str(target), "--format", "json")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name.split("_result_")[0] for p in target.iterdir()) == sorted(
        ["open_orders", "top_dates", "pending_items", "top_customers"]
    )


# --- global options after the command ----------------------------------------------------


def test_global_options_are_accepted_after_the_command(
    db_url: str, cli_env: Callable[..., None]
) -> None:
    cli_env()  # nothing in the environment: the options alone must point at the database
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES "
            "('2026-12-11', 1, 'PENDING')"
        )
    res = run("sync", "--database-url", db_url, "--timezone", "Europe/Berlin", "-v")
    assert res.exit_code == 0, res.stderr
    assert " DEBUG " in res.stderr  # -v after the command took effect
    res = run("--database-url", db_url, "refresh", "--log-format=json")
    assert res.exit_code == 0, res.stderr
    res = run("status", f"--database-url={db_url}", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)[0]["table"]


# --- passwords with an unencoded @ or / ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "pieces"),
    [
        pytest.param(
            "postgresql://wh:Pass@77@127.0.0.1:5432/db",
            ["Pass@77", "Pass", "@77"],
            id="at_in_password",
        ),
        pytest.param(
            "postgresql://wh:a1b2@c3d4@e5f6@127.0.0.1:5432/db",
            ["a1b2", "c3d4", "e5f6"],
            id="two_ats",
        ),
        pytest.param(
            "postgresql://wh:sl/ash99@127.0.0.1:5432/db",
            ["sl/ash99", "ash99"],
            id="slash_in_password",
        ),
        pytest.param(
            "postgres://wh:x@y!z@db.example:5432/db?sslmode=require",
            ["x@y!z", "y!z"],
            id="at_with_query",
        ),
    ],
)
@pytest.mark.parametrize("option", ["--database-url", "--source-url"])
def test_a_malformed_password_never_leaks(
    url: str, pieces: list[str], option: str, db_url: str
) -> None:
    args = [option, url] if option == "--database-url" else ["--database-url", db_url, option, url]
    res = run(*args, "status")
    assert res.exit_code == 1
    assert "malformed" in res.stderr and "%40" in res.stderr
    _assert_one_clean_line(res.stderr)
    for piece in pieces:
        assert piece not in res.stderr + res.stdout


@pytest.mark.parametrize(
    ("kind", "obj", "statement", "privilege"),
    [
        pytest.param(
            "table",
            "alembic_version",
            "SELECT version_num FROM alembic_version",
            "SELECT",
            id="read",
        ),
        pytest.param(
            "table",
            "orders",
            'INSERT INTO "staging"."orders" SELECT 1',
            "INSERT",
            id="insert_target",
        ),
        pytest.param(
            "table",
            "orders",
            "INSERT INTO staging.x SELECT * FROM staging.orders",
            "SELECT",
            id="insert_source",
        ),
        pytest.param(
            "table", "sync_state", "UPDATE staging.sync_state SET x = 1", "UPDATE", id="update"
        ),
        pytest.param("table", "orders", "TRUNCATE staging.orders", "TRUNCATE", id="truncate"),
        pytest.param(
            "table",
            "orders",
            'COPY "staging"."orders" (a) FROM STDIN (FORMAT BINARY)',
            "INSERT",
            id="copy_in",
        ),
        pytest.param(
            "table",
            "customers",
            "COPY (SELECT * FROM operations.customers) TO STDOUT",
            "SELECT",
            id="copy_out",
        ),
        pytest.param("view", "open_orders", "", "SELECT", id="view_unknown_statement"),
        pytest.param(
            "schema", "staging", "CREATE TABLE staging.t (x int)", "CREATE", id="create_in_schema"
        ),
        pytest.param(
            "schema", "operations", "SELECT 1 FROM operations.orders", "USAGE", id="schema_usage"
        ),
        pytest.param("function", "f", "", "EXECUTE", id="function"),
    ],
)
def test_privilege_needed(kind: str, obj: str, statement: str, privilege: str) -> None:
    assert privilege_needed(kind, obj, statement) == privilege


COMMANDS = {"sync", "status", "sample", "export"}


@pytest.mark.parametrize(
    ("argv", "hoisted"),
    [
        pytest.param(
            ["sync", "--database-url", "X"], ["--database-url", "X", "sync"], id="valued_after"
        ),
        pytest.param(
            ["sync", "--database-url=X", "-vv"],
            ["--database-url=X", "-vv", "sync"],
            id="equals_and_counted_flag",
        ),
        pytest.param(
            ["--debug", "sync", "--table", "orders", "--source-url", "S"],
            ["--debug", "--source-url", "S", "sync", "--table", "orders"],
            id="mixed",
        ),
        pytest.param(
            ["sample", "load", "-n", "5", "--log-format", "json"],
            ["--log-format", "json", "sample", "load", "-n", "5"],
            id="subcommand",
        ),
        pytest.param(
            ["export", "--output", "-", "--", "--debug"],
            ["export", "--output", "-", "--", "--debug"],
            id="after_double_dash",
        ),
        pytest.param(
            ["--timezone", "sync", "status"],
            ["--timezone", "sync", "status"],
            id="value_named_like_a_command",
        ),
        pytest.param(["--version"], ["--version"], id="no_command"),
    ],
)
def test_hoist_global_options(argv: list[str], hoisted: list[str]) -> None:
    assert hoist_global_options(argv, COMMANDS) == hoisted
