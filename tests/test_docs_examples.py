"""Every runnable example of the README and docs/ runs here and prints what the page shows.

How blocks are found, run and compared: :mod:`tests.support.doc_examples`. Each page runs in
new databases (the page's ``<!-- examples: ... -->`` comment says which), a scratch working
directory and home, with ``ACME_MV_DATABASE_URL`` and ``ACME_MV_SOURCE_URL`` pointing at them, and
``ACME_MV_CDC_SLOT`` naming a replication slot of the test's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from acme_mv.sample import load
from tests.support import doc_examples, smtp_server
from tests.support.cli_runner import child_env
from tests.support.database import DatabaseFactory

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: the sample history a page's ``source=sample`` starts from
SAMPLE_ORDERS = 300
#: what a page's ``cwd=checkout`` copy leaves out: version control, environments, caches
NOT_CHECKED_OUT = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
    "build",
    "dist",
)


def _runnable(page: Path) -> list[doc_examples.Block]:
    return [b for b in doc_examples.blocks(page) if b.lang in doc_examples.RUN]


def test_every_block_is_run_or_shown() -> None:
    """Shell examples are console sessions and Python examples pycon sessions, so that they
    run; a page with runnable examples says what they start from."""
    for page in PAGES:
        for block in doc_examples.blocks(page):
            assert block.lang in doc_examples.RUN + doc_examples.SHOWN, (
                f"{block}: a ```{block.lang} block; write shell examples as ```console "
                "($ command, then its output) and Python ones as ```pycon (>>>)"
            )
        if _runnable(page):
            assert doc_examples.setup(page) is not None, f"{page.name}: no <!-- examples: -->"


def _checkout(work: Path) -> Path:
    """A copy of the repository in ``work``, with a ``.venv`` the Makefile takes as installed:
    its ``bin`` is the suite's own and its stamp is newer than ``pyproject.toml``."""
    copy = work / "acme-mv"
    shutil.copytree(ROOT, copy, ignore=NOT_CHECKED_OUT, symlinks=True)
    venv = copy / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".installed-test").touch()
    return copy


def _databases(page: Path, make_db: DatabaseFactory) -> dict[str, str]:
    settings = doc_examples.setup(page) or {}
    source = settings.get("source", "none")
    warehouse = settings.get("warehouse", "empty")
    urls = {"ACME_MV_DATABASE_URL": make_db("warehouse" if warehouse == "migrated" else "empty")}
    if source != "none":
        urls["ACME_MV_SOURCE_URL"] = make_db("source")
    if source == "sample":
        with psycopg.connect(urls["ACME_MV_SOURCE_URL"]) as conn:
            load.load(conn, orders=SAMPLE_ORDERS, seed=1)
    return urls


@pytest.fixture
def slot(server_url: str) -> Iterator[str]:
    """A replication slot name of this test's own (slots are per server), dropped after it."""
    name = f"doc_{uuid.uuid4().hex[:12]}"
    yield name
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s AND NOT active",
            (name,),
        )


@pytest.mark.parametrize(
    "page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_the_pages_examples_run_and_print_what_it_shows(
    page: Path,
    make_db: DatabaseFactory,
    slot: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checkout = (doc_examples.setup(page) or {}).get("cwd") == "checkout"
    # a checkout's `make demo` starts its own server: no databases of the suite's
    urls = {} if checkout else {**_databases(page, make_db), "ACME_MV_CDC_SLOT": slot}
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = child_env(
        **urls,
        HOME=str(home),
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        COLUMNS="100",
        TERM="dumb",
        **{k: v for k, v in os.environ.items() if k == "ACME_MV_CACHE_DIR"},
    )
    for name, value in urls.items():
        monkeypatch.setenv(name, value)
    if checkout:
        work = _checkout(work)
        env["ACME_MV_CACHE_DIR"] = str(tmp_path / "cache")
    monkeypatch.chdir(work)
    with contextlib.ExitStack() as stack:
        if (doc_examples.setup(page) or {}).get("smtp") == "yes":
            server = stack.enter_context(smtp_server.running(tmp_path))
            env.update(
                ACME_MV_SMTP_URL=server.url,
                ACME_MV_SMTP_PASSWORD=smtp_server.PASSWORD,
                ACME_MV_SMTP_CAFILE=str(server.cafile),
            )
        failures = _run_page(page, env, work)
    assert not failures, "\n\n".join(failures)


def _run_page(page: Path, env: dict[str, str], work: Path) -> list[str]:
    failures: list[str] = []
    globs: dict[str, object] = {}
    for block in _runnable(page):
        if block.lang == "console":
            for ran in doc_examples.run_console(block, env=env, cwd=work):
                if ran.exit_code != 0 or not ran.matches():
                    failures.append(
                        f"{page.name}:{ran.command.line}: $ {ran.command.command}\n"
                        f"exit {ran.exit_code}; expected:\n{ran.command.expected}"
                        f"printed:\n{ran.output}"
                    )
        else:
            result = doc_examples.doctests(block, globs)
            if result.failed:
                failures.append(f"{block}: {result.failed} of {result.attempted} examples failed")
    return failures
