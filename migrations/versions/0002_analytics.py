"""analytics: snapshot bookkeeping, historic + current-day materialized views, union and top views

Revision ID: 0002_analytics
Revises: 0001_staging
Create Date: 2026-11-26

The SQL of every view is PINNED: this migration reads its own copies under
``migrations/sql/0002/`` (never today's ``views/``), so replaying it later
creates exactly what it created the first time. A later migration that
changes a view adds its own ``migrations/sql/<revision>/`` copy and uses
``acme_mv.reports.views.replace_view`` (see docs/reports.md).

Every materialized view gets a UNIQUE index NULLS NOT DISTINCT on its key
(so ``REFRESH ... CONCURRENTLY`` works, NULL delivery dates included). They
are created WITH DATA while the snapshot is empty (historic_batch_id NULL),
so they are populated (empty) and the first refresh can already run
concurrently.
"""

from __future__ import annotations

from pathlib import Path

from alembic import op

from acme_mv.reports import views

revision = "0002_analytics"
down_revision = "0001_staging"
branch_labels = None
depends_on = None

PINNED = Path(__file__).resolve().parent.parent / "sql" / "0002"

# created only when missing, as staging in 0001
SNAPSHOT = """
DO $$BEGIN IF to_regnamespace('analytics') IS NULL THEN CREATE SCHEMA analytics; END IF; END$$;

CREATE TABLE analytics.snapshot (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    historic_batch_id  bigint,
    taken_at           timestamptz,
    day                date,
    timezone           text,
    refreshed_at       timestamptz,
    refreshed_batch_id bigint,
    refresh_mode       text,
    historic_seconds   double precision,
    current_seconds    double precision
);
COMMENT ON TABLE analytics.snapshot IS
    'One row. historic_batch_id (B): the historic views hold the latest version of each key with '
    '_batch_id <= B, the current-day views the change since. NULL: never snapshotted.';
COMMENT ON COLUMN analytics.snapshot.day IS
    'The day (in the configured time zone) the historic views were rebuilt; a refresh on another day rebuilds them';
COMMENT ON COLUMN analytics.snapshot.refreshed_at IS 'The last refresh; NULL: never refreshed';
COMMENT ON COLUMN analytics.snapshot.refreshed_batch_id IS
    'The newest committed sync batch the last refresh included';
INSERT INTO analytics.snapshot DEFAULT VALUES;
"""


def upgrade() -> None:
    op.execute(SNAPSHOT)
    views.create_all(op, views.load_dir(PINNED))


def downgrade() -> None:
    op.execute("DROP SCHEMA analytics CASCADE")
