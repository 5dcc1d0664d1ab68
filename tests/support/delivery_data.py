"""The reports' known dataset (``DATA``) and its exports byte for byte (``EXPECTED``): the export,
grant and delivery tests compare every report with them; the ``refreshed`` fixture syncs and
refreshes it."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from acme_mv.config import Settings
from acme_mv.reports.refresh import refresh
from tests.support.staging_copy import copy_batch

DATA = """
INSERT INTO operations.customers (customer_name) VALUES ('Ann'), ('Bob, Jr.'), ('Cy');
INSERT INTO operations.products (product_name, barcode, unity_price) VALUES
    ('bolt ø8', 'b', 1), ('nut "M8"', 'n', 2);
INSERT INTO operations.orders (delivery_date, customer_id, status) VALUES
    ('2026-12-11', 1, 'PENDING'), ('2026-12-11', 2, 'PROCESSING'), (NULL, 2, 'PENDING'),
    ('2026-12-12', 3, 'COMPLETED'), ('2026-12-12', 9, 'REPROCESSING'),
    ('2026-12-13', NULL, 'PENDING');
INSERT INTO operations.order_items (order_id, product_id, quanity) VALUES
    (1, 1, 10), (1, 2, 5), (2, 2, NULL), (3, 1, 1), (4, 1, 100), (99, 1, 50), (5, 3, 7);
"""

EXPECTED = {
    "open_orders": "delivery_date,status,open_orders\n"
    "2026-12-11,PENDING,1\n2026-12-11,PROCESSING,1\n2026-12-12,REPROCESSING,1\n2026-12-13,PENDING,1\n,PENDING,1\n",
    "top_dates": "delivery_date,open_orders\n2026-12-11,2\n2026-12-12,1\n2026-12-13,1\n",
    "pending_items": "product_id,product_name,pending_items\n"
    '1,bolt ø8,11\n2,"nut ""M8""",5\n3,,7\n',
    "top_customers": 'customer_id,customer_name,pending_orders\n1,Ann,1\n2,"Bob, Jr.",1\n',
}


def sync_and_refresh(db_url: str) -> None:
    """One real sync (the one-database deployment) and one refresh."""
    copy_batch(db_url, db_url)
    refresh(Settings(database_url=db_url))


def load_and_refresh(db_url: str) -> str:
    """Insert ``DATA`` into the source, sync and refresh; returns ``db_url``."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(DATA)
    sync_and_refresh(db_url)
    return db_url


@pytest.fixture
def refreshed(db_url: str, cli_env: Callable[..., None]) -> str:
    """``DATA``, synced and refreshed (the one-database deployment); the CLI points at it."""
    cli_env(database_url=db_url)
    return load_and_refresh(db_url)
