"""sync_batches.source_at: the moment of the source a batch brings the reports up to

Revision ID: 0008_batch_source_at
Revises: 0007_cdc_resync
Create Date: 2026-12-07

A cursor sync reads the source when its batch starts, so ``started_at`` is that
moment and ``source_at`` stays NULL. A change-capture batch is applied after
its transactions committed, later still when the stream lags: ``source_at`` is
the commit time of its last transaction (the source's clock). Freshness reads
``coalesce(source_at, started_at)`` (:mod:`acme_mv.run.health`).
"""

from __future__ import annotations

from alembic import op

revision = "0008_batch_source_at"
down_revision = "0007_cdc_resync"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE staging.sync_batches ADD COLUMN source_at timestamptz;
COMMENT ON COLUMN staging.sync_batches.source_at IS
    'change capture: the commit time of the batch''s last source transaction; NULL: started_at '
    '(a cursor sync reads the source when its batch starts)';
"""

DOWNGRADE = """
ALTER TABLE staging.sync_batches DROP COLUMN source_at;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
