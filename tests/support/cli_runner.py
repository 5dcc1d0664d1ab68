"""Run the real ``acme-mv`` entry point in-process and capture what it prints; the ``cli_env``
fixture points its environment at a test's databases."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest
from rich.console import Console

from acme_mv.cli import common, main


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def run(*args: str) -> Result:
    """``acme-mv ARGS`` in this process; rich consoles are pointed at buffers."""
    out, err = io.StringIO(), io.StringIO()
    saved = common.out, common.err
    # the CLI configures these loggers; put them back so that later tests' caplog sees records
    loggers = [logging.getLogger(name) for name in ("acme_mv", "psycopg", "alembic")]
    saved_loggers = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    common.out = Console(file=out, soft_wrap=True, width=200)
    common.err = Console(file=err, width=200)
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        common.out, common.err = saved
        for lg, (handlers, level, propagate) in zip(loggers, saved_loggers, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)
    return Result(code, out.getvalue(), err.getvalue())


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without its ``ACME_MV_*`` settings, plus ``settings``: a child
    ``acme-mv`` sees only what the test gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACME_MV_")}
    env.update(settings)
    return env


def run_subprocess(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """``python -m acme_mv ARGS`` in a child process (for kill and concurrency tests)."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "acme_mv", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the CLI's environment at given URLs (and clear stray settings)."""

    def point(*, database_url: str | None = None, source_url: str | None = None) -> None:
        for var in ("ACME_MV_DATABASE_URL", "ACME_MV_SOURCE_URL", "ACME_MV_TIMEZONE"):
            monkeypatch.delenv(var, raising=False)
        if database_url is not None:
            monkeypatch.setenv("ACME_MV_DATABASE_URL", database_url)
        if source_url is not None:
            monkeypatch.setenv("ACME_MV_SOURCE_URL", source_url)

    return point
