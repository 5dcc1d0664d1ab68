"""cdc resync: per slot, the tables re-copied by ``acme-mv cdc resync`` and the source LSN of
each re-copy's snapshot

Revision ID: 0007_cdc_resync
Revises: 0006_report_keys
Create Date: 2026-12-07

``staging.cdc_state.resync`` maps a table name to the LSN (text) of the snapshot
its rows were last re-copied in: the stream skips that table's changes from
source transactions that committed before it (they are in the copy). An entry
the warehouse's position has passed is removed by the next batch.
"""

from __future__ import annotations

from alembic import op

revision = "0007_cdc_resync"
down_revision = "0006_report_keys"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE staging.cdc_state ADD COLUMN resync jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN staging.cdc_state.resync IS
    'table name -> LSN of the snapshot acme-mv cdc resync re-copied it in: the stream skips '
    'that table''s changes from transactions that committed before it';
"""

DOWNGRADE = """
ALTER TABLE staging.cdc_state DROP COLUMN resync;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
