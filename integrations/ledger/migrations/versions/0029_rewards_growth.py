"""partial indexes on the unrewarded conversions and the pending payouts, instead of
indexes led by ``rewarded_at`` and by ``status``

Without statistics SQLite guesses that ``rewarded_at IS NULL`` (or ``status =
'pending'``) on an index finds ten rows, fewer than a list of 500 ids on the primary
key: "these conversions, still unrewarded" read every unrewarded conversion, and "these
payouts, still pending" every pending payout, for each chunk of ids. Computing rewards
and paying them grew with the square of a cycle's conversions and payouts
(``compute-rewards`` 19x, ``submit-payouts`` 16x from 100,000 to 1,000,000 customers).
A partial index offers no such shortcut (nothing in it is keyed by the condition), so
those statements go by their ids; the index still serves what it is for, the
unrewarded conversions in order and the pending payouts in order, and a conversion
rewarded or a payout settled leaves it.

Revision ID: 0029r
Revises: 0028
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0029r"
down_revision = "0028"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
UNREWARDED = "rewarded_at IS NULL"
PENDING = "status = 'pending'"


def upgrade() -> None:
    op.drop_index("ix_conversions_unrewarded", table_name="conversions")
    op.create_index(
        "ix_conversions_to_reward",
        "conversions",
        ["occurred_at", "conversion_id"],
        sqlite_where=sa.text(UNREWARDED),
        postgresql_where=sa.text(UNREWARDED),
    )
    op.drop_index("ix_payouts_status", table_name="payouts")
    op.create_index(
        "ix_payouts_pending",
        "payouts",
        ["created_at", "payout_id"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_payouts_pending", table_name="payouts")
    op.create_index("ix_payouts_status", "payouts", ["status"])
    op.drop_index("ix_conversions_to_reward", table_name="conversions")
    op.create_index(
        "ix_conversions_unrewarded",
        "conversions",
        ["rewarded_at", "occurred_at", "conversion_id"],
    )
