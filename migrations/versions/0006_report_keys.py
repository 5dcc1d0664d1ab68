"""report keys: the open_orders summary tables are unique on md5(status), so a status of any
length is a report group

Revision ID: 0006_report_keys
Revises: 0005_delivery
Create Date: 2026-12-07

``analytics.open_orders_historic`` and ``analytics.open_orders_current`` were
unique on ``(delivery_date, status)``: a B-tree entry holds at most about
2.7 kB, and ``status`` is a ``VARCHAR`` without a length at the source, so one
hand-written status longer than that (and not compressible below it) failed
every refresh. Their unique key becomes ``(delivery_date, md5(status))``
(``NULLS NOT DISTINCT``: a NULL delivery date is a group of its own): 32
characters whatever the status's length. The refresh's ``ON CONFLICT`` names
the same expressions (the ``-- unique:`` header of
``views/summaries/open_orders.sql``). Same index names as the constraints
they replace. The union views do not change.

Downgrade restores the unique constraints on the raw columns; it fails with
the server's "index row size" error while a status longer than a B-tree entry
is in the summary tables (such a status cannot be kept under the old key).
"""

from __future__ import annotations

from alembic import op

revision = "0006_report_keys"
down_revision = "0005_delivery"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE analytics.open_orders_historic DROP CONSTRAINT open_orders_historic_key;
CREATE UNIQUE INDEX open_orders_historic_key
    ON analytics.open_orders_historic (delivery_date, md5(status)) NULLS NOT DISTINCT;
ALTER TABLE analytics.open_orders_current DROP CONSTRAINT open_orders_current_key;
CREATE UNIQUE INDEX open_orders_current_key
    ON analytics.open_orders_current (delivery_date, md5(status)) NULLS NOT DISTINCT;
"""

DOWNGRADE = """
DROP INDEX analytics.open_orders_current_key;
ALTER TABLE analytics.open_orders_current
    ADD CONSTRAINT open_orders_current_key UNIQUE NULLS NOT DISTINCT (delivery_date, status);
DROP INDEX analytics.open_orders_historic_key;
ALTER TABLE analytics.open_orders_historic
    ADD CONSTRAINT open_orders_historic_key UNIQUE NULLS NOT DISTINCT (delivery_date, status);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
