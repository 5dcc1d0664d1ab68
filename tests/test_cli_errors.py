"""Bad connection input: one clear line, non-zero exit, no traceback, no secret."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.cli_runner import run

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
