"""incremental: latest-state tables, per-batch signed deltas, summary tables folded at rollover

Revision ID: 0003_incremental
Revises: 0002_analytics
Create Date: 2026-11-26

Replaces 0002's materialized views (recomputed from every staged version) by
work proportional to the change (see docs/reports.md):

- ``staging.orders_state`` / ``staging.order_items_state``: the latest live
  version of every key (the report columns), upserted by every batch in the
  batch's own transaction (:mod:`acme_mv.staging.apply`);
- ``analytics.*_delta``: each batch's signed change per report group (its
  keys' contribution after the batch minus before it), written in the same
  transaction;
- ``analytics.*_historic`` / ``analytics.*_current``: plain summary TABLES
  (same names and columns as 0002's materialized views): historic = the sum
  of the deltas of batches <= B, current = those in (B, R]. A refresh adds the
  new batches' deltas into current; a rollover folds current into historic.

The union views (``analytics.open_orders``, ``pending_items``,
``pending_orders_by_customer``, ``open_orders_by_date``, ``top_dates``,
``top_customers``) keep their names, columns and text; they are dropped with
the materialized views they read and recreated from the pinned copies in
``migrations/sql/0003/``.

Upgrade with data present backfills the state tables from the latest staged
versions and the historic tables from the state: B = R = the newest batch,
and as-of history starts there (``history_batch_id``).

The version tables (``staging.orders``, ``staging.order_items``) become
partitioned by RANGE of ``_batch_id`` so that compaction drops whole
partitions (``acme-mv compact``): what was staged becomes the first partition
``<table>_b0`` (attached after a validating scan, once), the batches create
the next ones (:mod:`acme_mv.staging.partitions`). Downgrade copies them back
into plain tables. Downgrade recreates
0002's objects from its own pinned SQL; the ``_deleted`` column is left in
place (change capture's revision adds it too, IF NOT EXISTS, and a later
revision may depend on it).
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from acme_mv.reports import views

revision = "0003_incremental"
down_revision = "0002_analytics"
branch_labels = None
depends_on = None

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
PINNED = SQL_DIR / "0003"
PREVIOUS = SQL_DIR / "0002"

#: 0001's views of the latest version of every key, recreated over the new tables
LATEST = """
CREATE VIEW staging.orders_latest AS
SELECT DISTINCT ON (order_id) *
FROM staging.orders
ORDER BY order_id, _batch_id DESC;

CREATE VIEW staging.order_items_latest AS
SELECT DISTINCT ON (order_item_id) *
FROM staging.order_items
ORDER BY order_item_id, _batch_id DESC;
"""

#: 0002's objects this revision replaces, dropped last-created first (CASCADE would hide a mistake)
OLD_OBJECTS = """
DROP VIEW analytics.top_customers;
DROP VIEW analytics.top_dates;
DROP VIEW analytics.pending_orders_by_customer;
DROP VIEW analytics.open_orders_by_date;
DROP VIEW analytics.pending_items;
DROP VIEW analytics.open_orders;
DROP MATERIALIZED VIEW analytics.open_orders_current;
DROP MATERIALIZED VIEW analytics.pending_items_current;
DROP MATERIALIZED VIEW analytics.pending_orders_current;
DROP MATERIALIZED VIEW analytics.open_orders_historic;
DROP MATERIALIZED VIEW analytics.pending_items_historic;
DROP MATERIALIZED VIEW analytics.pending_orders_historic;
DROP VIEW analytics.changed_order_items;
DROP VIEW analytics.changed_orders;
DROP VIEW analytics.historic_order_items;
DROP VIEW analytics.historic_orders;
"""

#: the version tables become partitioned by RANGE (_batch_id); what was staged is the first
#: partition (<name>_b0, every batch drawn so far), later ones are created by the batches
#: (acme_mv.staging.partitions) and dropped whole by compaction
PARTITION = (
    """
DROP VIEW staging.orders_latest;
DROP VIEW staging.order_items_latest;

CREATE TABLE staging.version_partitions (
    table_name     text NOT NULL,
    partition_name text NOT NULL,
    from_batch     bigint NOT NULL,
    to_batch       bigint NOT NULL,
    PRIMARY KEY (table_name, from_batch)
);
COMMENT ON TABLE staging.version_partitions IS
    'The partitions of staging.orders / staging.order_items: batches [from_batch, to_batch), contiguous';

DO $$
DECLARE
    t text;
    next_batch bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_batch
    FROM staging.sync_batch_id_seq;
    FOREACH t IN ARRAY ARRAY['orders', 'order_items'] LOOP
        EXECUTE format('ALTER TABLE staging.%I RENAME TO %I', t, t || '_b0');
        EXECUTE format('ALTER INDEX staging.%I RENAME TO %I', t || '_key_batch_idx', t || '_b0_key_batch_idx');
        EXECUTE format('DROP INDEX staging.%I', t || '_batch_idx');
        EXECUTE format('CREATE TABLE staging.%I (LIKE staging.%I INCLUDING DEFAULTS) PARTITION BY RANGE (_batch_id)',
                       t, t || '_b0');
        EXECUTE format('ALTER TABLE staging.%I ATTACH PARTITION staging.%I FOR VALUES FROM (MINVALUE) TO (%s)',
                       t, t || '_b0', next_batch);
        INSERT INTO staging.version_partitions VALUES (t, t || '_b0', -9223372036854775808, next_batch);
    END LOOP;
END $$;
-- the items of an order are found in staging.order_items_state now (its own order_id index):
-- one index less to maintain on every version
DROP INDEX staging.order_items_order_idx;

-- the existing partition's equal indexes are attached, not rebuilt
CREATE UNIQUE INDEX orders_key_batch_idx ON staging.orders (order_id, _batch_id DESC);
CREATE UNIQUE INDEX order_items_key_batch_idx ON staging.order_items (order_item_id, _batch_id DESC);
-- a batch's rows are read through the BRIN index and every range it matches is read whole:
-- ranges of 16 pages (about 1,500 rows) bound what a batch reads beyond its own rows
CREATE INDEX orders_batch_idx ON staging.orders USING brin (_batch_id) WITH (pages_per_range = 16);
CREATE INDEX order_items_batch_idx ON staging.order_items USING brin (_batch_id) WITH (pages_per_range = 16);
"""
    + LATEST
)

UNPARTITION = (
    """
DROP VIEW staging.orders_latest;
DROP VIEW staging.order_items_latest;
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['orders', 'order_items'] LOOP
        EXECUTE format('ALTER TABLE staging.%I RENAME TO %I', t, t || '_parted');
        EXECUTE format('CREATE TABLE staging.%I (LIKE staging.%I INCLUDING DEFAULTS)', t, t || '_parted');
        EXECUTE format('INSERT INTO staging.%I SELECT * FROM staging.%I', t, t || '_parted');
        EXECUTE format('DROP TABLE staging.%I', t || '_parted');
    END LOOP;
END $$;
DROP TABLE staging.version_partitions;
CREATE UNIQUE INDEX orders_key_batch_idx ON staging.orders (order_id, _batch_id DESC);
CREATE INDEX orders_batch_idx ON staging.orders USING brin (_batch_id);
CREATE UNIQUE INDEX order_items_key_batch_idx ON staging.order_items (order_item_id, _batch_id DESC);
CREATE INDEX order_items_batch_idx ON staging.order_items USING brin (_batch_id);
CREATE INDEX order_items_order_idx ON staging.order_items (order_id);
"""
    + LATEST
)

TABLES = """
ALTER TABLE staging.orders ADD COLUMN IF NOT EXISTS _deleted boolean NOT NULL DEFAULT false;
ALTER TABLE staging.order_items ADD COLUMN IF NOT EXISTS _deleted boolean NOT NULL DEFAULT false;

CREATE TABLE staging.orders_state (
    order_id      bigint PRIMARY KEY,
    delivery_date date,
    customer_id   bigint,
    status        varchar,
    _batch_id     bigint NOT NULL
);
COMMENT ON TABLE staging.orders_state IS
    'The latest live version of every order (report columns), maintained by every batch '
    '(acme_mv.sync.apply); a tombstone removes the key';

CREATE TABLE staging.order_items_state (
    order_item_id bigint PRIMARY KEY,
    order_id      bigint,
    product_id    bigint,
    quanity       integer,
    _batch_id     bigint NOT NULL
);
CREATE INDEX order_items_state_order_idx ON staging.order_items_state (order_id);
COMMENT ON TABLE staging.order_items_state IS
    'The latest live version of every order item (report columns), maintained by every batch';

CREATE TABLE analytics.open_orders_delta (
    batch_id      bigint NOT NULL,
    delivery_date date,
    status        varchar NOT NULL,
    n             bigint NOT NULL
);
CREATE INDEX open_orders_delta_batch_idx ON analytics.open_orders_delta (batch_id);
CREATE TABLE analytics.pending_items_delta (
    batch_id   bigint NOT NULL,
    product_id bigint NOT NULL,
    n          bigint NOT NULL
);
CREATE INDEX pending_items_delta_batch_idx ON analytics.pending_items_delta (batch_id);
CREATE TABLE analytics.pending_orders_delta (
    batch_id    bigint NOT NULL,
    customer_id bigint NOT NULL,
    n           bigint NOT NULL
);
CREATE INDEX pending_orders_delta_batch_idx ON analytics.pending_orders_delta (batch_id);
COMMENT ON TABLE analytics.open_orders_delta IS
    'Per batch: the signed change of open orders per (delivery_date, status) the batch made';

CREATE TABLE analytics.open_orders_historic (
    delivery_date date, status varchar NOT NULL, n bigint NOT NULL,
    CONSTRAINT open_orders_historic_key UNIQUE NULLS NOT DISTINCT (delivery_date, status)
);
CREATE TABLE analytics.open_orders_current (
    delivery_date date, status varchar NOT NULL, n bigint NOT NULL,
    CONSTRAINT open_orders_current_key UNIQUE NULLS NOT DISTINCT (delivery_date, status)
);
CREATE TABLE analytics.pending_items_historic (product_id bigint PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE analytics.pending_items_current (product_id bigint PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE analytics.pending_orders_historic (customer_id bigint PRIMARY KEY, n bigint NOT NULL);
CREATE TABLE analytics.pending_orders_current (customer_id bigint PRIMARY KEY, n bigint NOT NULL);
COMMENT ON TABLE analytics.open_orders_historic IS
    'The sum of the open_orders deltas of every batch <= snapshot.historic_batch_id (folded at rollover)';
COMMENT ON TABLE analytics.open_orders_current IS
    'The sum of the open_orders deltas of the batches in (historic_batch_id, refreshed_batch_id]';

ALTER TABLE analytics.snapshot ADD COLUMN history_batch_id bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN analytics.snapshot.history_batch_id IS
    'The deltas of every batch after this one are kept: a report as of any batch >= it is exact';
"""

#: the latest staged versions -> state; the state -> historic summaries; B = R = the newest batch
BACKFILL = """
INSERT INTO staging.orders_state (order_id, delivery_date, customer_id, status, _batch_id)
SELECT o.order_id, o.delivery_date, o.customer_id, o.status, o._batch_id
FROM (SELECT DISTINCT ON (order_id) * FROM staging.orders ORDER BY order_id, _batch_id DESC) AS o
WHERE NOT o._deleted;

INSERT INTO staging.order_items_state (order_item_id, order_id, product_id, quanity, _batch_id)
SELECT i.order_item_id, i.order_id, i.product_id, i.quanity, i._batch_id
FROM (SELECT DISTINCT ON (order_item_id) * FROM staging.order_items ORDER BY order_item_id, _batch_id DESC) AS i
WHERE NOT i._deleted;

INSERT INTO analytics.open_orders_historic (delivery_date, status, n)
SELECT delivery_date, status, count(*) FROM staging.orders_state
WHERE status IS NOT NULL AND status <> 'COMPLETED'
GROUP BY delivery_date, status;

INSERT INTO analytics.pending_orders_historic (customer_id, n)
SELECT customer_id, count(*) FROM staging.orders_state
WHERE status = 'PENDING' AND customer_id IS NOT NULL
GROUP BY customer_id;

INSERT INTO analytics.pending_items_historic (product_id, n)
SELECT i.product_id, sum(coalesce(i.quanity, 0)) FROM staging.order_items_state AS i
JOIN staging.orders_state AS o ON o.order_id = i.order_id
WHERE o.status IS NOT NULL AND o.status <> 'COMPLETED' AND i.product_id IS NOT NULL
GROUP BY i.product_id;

UPDATE analytics.snapshot SET
    historic_batch_id = b.batch_id,
    refreshed_batch_id = b.batch_id,
    history_batch_id = coalesce(b.batch_id, 0),
    taken_at = CASE WHEN b.batch_id IS NULL THEN taken_at ELSE now() END
FROM (SELECT max(batch_id) AS batch_id FROM staging.sync_batches) AS b;
"""

NEW_TABLES = """
DROP TABLE analytics.open_orders_delta, analytics.pending_items_delta, analytics.pending_orders_delta,
    analytics.open_orders_historic, analytics.open_orders_current,
    analytics.pending_items_historic, analytics.pending_items_current,
    analytics.pending_orders_historic, analytics.pending_orders_current;
DROP TABLE staging.orders_state, staging.order_items_state;
ALTER TABLE analytics.snapshot DROP COLUMN history_batch_id;
"""


def upgrade() -> None:
    op.execute(OLD_OBJECTS)
    op.execute(TABLES)
    op.execute(PARTITION)
    op.execute(BACKFILL)
    views.create_all(op, views.load_dir(PINNED))


def downgrade() -> None:
    views.drop_all(op, views.load_dir(PINNED))
    op.execute(NEW_TABLES)
    op.execute(UNPARTITION)
    # 0002's historic/current views are rebuilt WITH DATA from staging as of its snapshot B
    views.create_all(op, views.load_dir(PREVIOUS))
