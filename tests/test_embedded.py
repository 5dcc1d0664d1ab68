"""The embedded PostgreSQL wheel, started from several processes at once.

``make test`` starts it from every pytest-xdist worker at the same moment; on a
machine where its data directory does not exist yet the wheel raced with
itself (``mkdir``, ``useradd``, ``chown`` + ``initdb`` run outside its own
lock). Here several processes start it on a fresh data directory in their own
cache directory: all must succeed, on one server, tuned once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from acme_mv import embedded

#: how many processes race for the first start (pytest -n auto on a 4-core box)
STARTERS = 4

#: a child: start the server, report what it is, stay attached until stdin closes
CHILD = """
import json, sys
from pathlib import Path
import psycopg
from acme_mv import embedded
url = embedded.start("race", pgdata=Path(sys.argv[1]))
with psycopg.connect(url) as conn:
    started, data, fsync = conn.execute(
        "SELECT pg_postmaster_start_time()::text, current_setting('data_directory'), current_setting('fsync')"
    ).fetchone()
print(json.dumps({"started": started, "data": data, "fsync": fsync}), flush=True)
sys.stdin.read()
"""


@pytest.mark.slow
def test_a_first_start_from_several_processes_at_once_gives_one_server(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    pgdata = cache / "postgres-race"
    env = {**os.environ, embedded.CACHE_ENV: str(cache)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(pgdata)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(STARTERS)
    ]
    try:
        # every child reports while all of them are still attached
        lines = [child.stdout.readline() if child.stdout else "" for child in children]
    finally:
        for child in children:
            if child.stdin:
                child.stdin.close()
    errors = [child.stderr.read() if child.stderr else "" for child in children]
    codes = [child.wait(timeout=120) for child in children]
    assert codes == [0] * STARTERS, "\n".join(errors)
    reports = [json.loads(line) for line in lines]
    assert len({r["started"] for r in reports}) == 1, reports  # one postmaster, started once
    assert {Path(r["data"]).resolve() for r in reports} == {pgdata.resolve()}
    assert {r["fsync"] for r in reports} == {"off"}  # FAST_SETTINGS applied
    assert (cache / embedded.START_LOCK).exists()
    # the last child to leave stopped the server: they shared one reference count
    assert not (pgdata / "postmaster.pid").exists()
