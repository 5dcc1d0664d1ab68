"""delivery: the record of scheduled mail sends (``acme-mv run --mail-at``)

Revision ID: 0005_delivery
Revises: 0004_cdc
Create Date: 2026-11-26

One row per (day, kind): the row's ``sent_at`` is set in the same transaction
that claimed the row, after the SMTP server accepted the message, so a day's
mail is never recorded as sent unless it was, and the unique key stops a
second runner from sending it again. A failed attempt leaves the row with
``sent_at`` NULL, its ``attempts`` and ``last_error``: the next cycle retries.
It lives in acme-mv's own schema ``acme_mv`` (owned by the warehouse role,
like Alembic's version table), not in ``analytics``: a report-reader role
granted ``analytics`` does not see who gets the mail, and a least-privilege
warehouse role needs no right to create schemas.
"""

from __future__ import annotations

from alembic import op

revision = "0005_delivery"
down_revision = "0004_cdc"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE acme_mv.mail_sends (
    day                date NOT NULL,
    kind               text NOT NULL,
    sent_at            timestamptz,
    recipients         text[] NOT NULL DEFAULT '{}',
    refreshed_batch_id bigint,
    attempts           integer NOT NULL DEFAULT 0,
    last_attempt_at    timestamptz,
    last_error         text,
    PRIMARY KEY (day, kind)
);
COMMENT ON TABLE acme_mv.mail_sends IS
    'One row per scheduled mail and day. sent_at NULL: not sent yet (attempts and last_error say why)';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("DROP TABLE acme_mv.mail_sends")
