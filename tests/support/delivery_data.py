"""The delivery tests' dataset: test_export's rows, synced and refreshed, so every delivered
report can be compared with ``acme-mv export``'s files and test_export's EXPECTED text."""

from __future__ import annotations

import psycopg

from acme_mv.config import Settings
from acme_mv.reports.refresh import refresh
from tests.support.staging_copy import copy_batch
from tests.test_export import DATA, EXPECTED

__all__ = ["DATA", "EXPECTED", "load_and_refresh", "sync_and_refresh"]


def sync_and_refresh(db_url: str) -> None:
    """One real sync (the one-database deployment) and one refresh."""
    copy_batch(db_url, db_url)
    refresh(Settings(database_url=db_url))


def load_and_refresh(db_url: str) -> str:
    """Insert test_export's rows into the source, sync and refresh; returns ``db_url``."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(DATA)
    sync_and_refresh(db_url)
    return db_url
