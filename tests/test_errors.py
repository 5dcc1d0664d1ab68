"""Errors carry what they are about as attributes (tests assert those, not message text), and
all of them are :class:`acme_mv.errors.AcmeMvError`."""

from __future__ import annotations

import inspect
import socket
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from acme_mv import errors
from acme_mv.cdc import errors as cdc_errors
from acme_mv.cdc.write import Unsendable
from acme_mv.delivery.dashboard.app import _listen
from acme_mv.reports import export
from acme_mv.run.health import Freshness, require_fresh
from acme_mv.staging import batch
from acme_mv.sync.source import SourceLocked


def _error_classes() -> list[type[Exception]]:
    return [
        cls
        for module in (errors, cdc_errors)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, Exception) and cls.__module__ == module.__name__
    ] + [SourceLocked, Unsendable]


def test_every_error_has_the_one_base() -> None:
    classes = _error_classes()
    assert len(classes) > 20
    for cls in classes:
        assert issubclass(cls, errors.AcmeMvError), cls


def test_every_exit_code_is_in_the_one_table() -> None:
    used = {cls.exit_code for cls in _error_classes() if issubclass(cls, errors.AcmeMvError)}
    used |= {0, errors.GAPS_EXIT_CODE, errors.INTERRUPTED_EXIT_CODE}
    assert used == set(errors.EXIT_CODES)


def test_stale_carries_the_age_and_the_limit() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    fresh = Freshness(refreshed_at=now, refreshed_batch_id=7, read_at=now, age_s=90.0)
    with pytest.raises(errors.Stale) as info:
        require_fresh(fresh, 60)
    assert (info.value.age_s, info.value.max_age_s, info.value.exit_code) == (90.0, 60, 5)
    never = Freshness(refreshed_at=None, refreshed_batch_id=None, read_at=None, age_s=None)
    with pytest.raises(errors.Stale) as info:
        require_fresh(never, 60)
    assert info.value.age_s is None


def test_unknown_report_carries_the_name() -> None:
    with pytest.raises(errors.UnknownReport) as info:
        export.report_query("no_such_report")
    assert info.value.name == "no_such_report"
    assert info.value.exit_code == 2


def test_export_error_carries_the_path(tmp_path: Path) -> None:
    taken = tmp_path / "open_orders.csv"
    taken.write_text("x\n")
    at = datetime(2026, 11, 26, tzinfo=UTC)
    with pytest.raises(errors.ExportError) as info:
        export._target("open_orders", output=taken, output_dir=None, fmt="csv", at=at, force=False)
    assert info.value.path == taken
    missing = tmp_path / "no" / "such" / "dir" / "x.csv"
    with pytest.raises(errors.ExportError) as info:
        export._target(
            "open_orders", output=missing, output_dir=None, fmt="csv", at=at, force=False
        )
    assert info.value.path == missing.parent


def test_listen_failed_carries_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(errors.ListenFailed) as info:
            _listen("127.0.0.1", port).close()
    assert (info.value.host, info.value.port) == ("127.0.0.1", port)


def test_busy_names_what_is_held(db_url: str) -> None:
    with psycopg.connect(db_url) as holder, psycopg.connect(db_url) as other:
        batch.lock(holder, wait=False)
        with pytest.raises(errors.Busy) as info:
            batch.lock(other, wait=False)
    assert info.value.resource == f"advisory lock {batch.SYNC_LOCK_KEY}"
    assert info.value.exit_code == 3
