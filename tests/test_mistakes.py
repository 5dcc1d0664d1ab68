"""Each user mistake of ``tests/support/mistakes.py``, made against real servers: one line on
stderr saying what failed and how to fix it, the documented exit code, no traceback, no secret.
docs/errors.md shows the same table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from acme_mv.grants import grant_reader
from tests.support import mistakes
from tests.support.cli_runner import child_env, run
from tests.support.database import DatabaseFactory
from tests.support.delivery_data import sync_and_refresh
from tests.support.roles import RoleFactory
from tests.support.smtp_server import running

WRONG = "not-the-password-x9"
#: the environment a mistake starts from: no stray settings of this process
CLEARED = ("ACME_MV_DATABASE_URL", "ACME_MV_SOURCE_URL", "ACME_MV_TIMEZONE", "ACME_MV_SMTP_URL",
           "ACME_MV_MAIL_TO", "ACME_MV_MAIL_AT", "ACME_MV_READER_URL")  # fmt: skip


@pytest.fixture
def urls(
    request: pytest.FixtureRequest,
    server_url: str,
    make_db: DatabaseFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[dict[str, str]]:
    """The placeholders' URLs of the mistake under test; its world set up."""
    mistake: mistakes.Mistake = request.param
    found = {
        "{nodb}": make_conninfo(server_url, dbname="acme_no_such_db"),
        "{badhost}": "postgresql://acme@no-such-host.invalid/acme",
        "{refused}": "postgresql://acme@127.0.0.1:1/acme",
        "{nosocket}": f"host={tmp_path / 'no-server'} dbname=acme",
        "{atpw}": f"postgresql://acme:p@ss{WRONG}@127.0.0.1:1/acme",
    }
    if mistake.id == "wrong_password":
        role_url = request.getfixturevalue("password_role_url")
        found["{badpw}"] = make_conninfo(role_url, password=WRONG)
    world = mistake.world
    if world in ("migrated", "reader", "smtp_plain", "granted_reader"):
        found["{db}"] = make_db("both")
    elif world == "empty":
        found["{db}"] = make_db("empty")
    elif world == "no_source":
        found["{db}"] = make_db("warehouse")
        found["{empty}"] = make_db("empty")
    if world in ("reader", "granted_reader"):
        make_role: RoleFactory = request.getfixturevalue("make_role")
        role = make_role("acme_mistake")
        if world == "granted_reader":
            sync_and_refresh(found["{db}"])
            grant_reader(found["{db}"], role.name)
        found["{db}"] = role.url(found["{db}"])
    for var in CLEARED:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray ~/.netrc or ~/.pgpass
    if "{db}" in found:
        monkeypatch.setenv("ACME_MV_DATABASE_URL", found["{db}"])
    if world == "smtp_plain":
        sync_and_refresh(found["{db}"])
        with running(tmp_path, tls="none") as relay:
            found["{smtp_plain}"] = f"smtp://{relay.host}:{relay.port}"
            found["{smtps_plain}"] = f"smtps://{relay.host}:{relay.port}"
            yield found
    else:
        yield found


def _fill(text: str, urls: dict[str, str]) -> str:
    for placeholder, url in urls.items():
        text = text.replace(placeholder, url)
    return text


@pytest.mark.parametrize(
    ("urls", "mistake"),
    [pytest.param(m, m, id=m.id) for m in mistakes.MISTAKES],
    indirect=["urls"],
)
def test_a_mistake_is_one_line_saying_how_to_fix_it(
    urls: dict[str, str], mistake: mistakes.Mistake, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in mistake.env.items():
        monkeypatch.setenv(var, _fill(value, urls))
    args = [_fill(a, urls) for a in mistake.args]
    if mistake.interrupt:
        code, stderr = _interrupted(args, urls["{db}"])
    else:
        res = run(*args)
        code, stderr = res.exit_code, res.stderr
    lines = [line for line in stderr.splitlines() if line.startswith("Error")]
    assert len(lines) == 1, stderr
    assert mistake.says in lines[0], stderr
    assert code == mistake.exit_code, stderr
    assert "Traceback" not in stderr
    assert "Unexpected error" not in stderr
    assert WRONG not in stderr


def _interrupted(args: list[str], db: str) -> tuple[int, str]:
    """Run the command in a child that waits for a lock this test holds; Ctrl-C it there."""
    with psycopg.connect(db) as holder:
        holder.execute(
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                sql.Identifier("operations", "orders")
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "acme_mv", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **child_env(**{k: v for k, v in os.environ.items() if k.startswith("ACME_MV_")}),
                "ACME_MV_LOG_FORMAT": "plain",
            },  # fmt: skip
            # a background test run may ignore SIGINT, and a child inherits that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler),
        )
        try:
            assert proc.stderr is not None
            seen = ""
            while "is locked by another session" not in seen:  # the sync waits for the lock
                line = proc.stderr.readline()
                assert line, f"the command ended first: {seen}"
                seen += line
            proc.send_signal(signal.SIGINT)
            rest = proc.communicate(timeout=60)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
        with psycopg.connect(db) as conn:  # rolled back: no batch committed
            assert conn.execute("SELECT count(*) FROM staging.sync_batches").fetchone() == (0,)
    return proc.returncode, seen + rest
