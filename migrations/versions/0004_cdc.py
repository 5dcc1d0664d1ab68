"""cdc: tombstones in staging (``_deleted``) and the change-capture position (``staging.cdc_state``)

Revision ID: 0004_cdc
Revises: 0003_incremental
Create Date: 2026-11-26

A deleted source row becomes a TOMBSTONE in ``staging.orders`` /
``staging.order_items``: a new version with the key, every other contract
column NULL and ``_deleted = true``. The latest version of a key is still the
current state; a tombstone contributes to no report (its status is NULL, its
order_id is NULL). ``acme-mv cdc`` writes them for deletes read from the WAL,
``acme-mv sync --full`` for keys gone from the source.

``staging.cdc_state`` holds, per replication slot, the source LSN up to which
the warehouse holds every change: it is written in the same transaction as the
batch's rows, and the slot is told (confirmed_flush) only after that commit.

The ``*_latest`` views are re-created so that ``*`` includes ``_deleted``
(a view's ``*`` is expanded when it is created). The column itself belongs to
revision 0003 since the chains were joined (it is added there IF NOT EXISTS,
and the state views of 0003 read it), so the downgrade leaves it in place.
"""

from __future__ import annotations

from alembic import op

revision = "0004_cdc"
down_revision = "0003_incremental"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE staging.orders ADD COLUMN IF NOT EXISTS _deleted boolean NOT NULL DEFAULT false;
ALTER TABLE staging.order_items ADD COLUMN IF NOT EXISTS _deleted boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN staging.orders._deleted IS
    'A tombstone: the key was deleted at the source; every other contract column is NULL';
COMMENT ON COLUMN staging.order_items._deleted IS
    'A tombstone: the key was deleted at the source; every other contract column is NULL';

CREATE OR REPLACE VIEW staging.orders_latest AS
SELECT DISTINCT ON (order_id) *
FROM staging.orders
ORDER BY order_id, _batch_id DESC;

CREATE OR REPLACE VIEW staging.order_items_latest AS
SELECT DISTINCT ON (order_item_id) *
FROM staging.order_items
ORDER BY order_item_id, _batch_id DESC;

ALTER TABLE staging.sync_batches ADD COLUMN compared_tables text[] NOT NULL DEFAULT '{}';
COMMENT ON COLUMN staging.sync_batches.compared_tables IS
    'Tables this batch compared whole with the source (sync --full): keys gone from the source got tombstones';

CREATE TABLE staging.cdc_state (
    slot_name       text PRIMARY KEY,
    publication     text NOT NULL,
    lsn             pg_lsn NOT NULL,
    last_commit_lsn pg_lsn,
    last_commit_at  timestamptz,
    last_batch_id   bigint,
    caught_up_at    timestamptz,
    setup_at        timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE staging.cdc_state IS
    'One row per replication slot that feeds staging (acme-mv cdc)';
COMMENT ON COLUMN staging.cdc_state.lsn IS
    'Every source transaction whose commit ends at or before this LSN is in staging; '
    'the stream resumes here and skips transactions that end at or before it';
COMMENT ON COLUMN staging.cdc_state.last_commit_at IS
    'Source commit time of the newest transaction applied';
COMMENT ON COLUMN staging.cdc_state.caught_up_at IS
    'The last heartbeat: when the streamer had applied everything the source had sent';
"""

DOWNGRADE = """
DROP TABLE staging.cdc_state;
ALTER TABLE staging.sync_batches DROP COLUMN compared_tables;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
