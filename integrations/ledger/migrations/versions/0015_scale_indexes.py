"""indexes the cycle bench found missing: a referee's earlier conversions, the
unrewarded conversions in order, and a code's asks (recording conversions was
quadratic without them: 614 s of 993 s at 100,000 customers)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_conversions_referee_account", "conversions", ["referee_account_id"])
    op.create_index("ix_conversions_referee_contact", "conversions", ["referee_contact_id"])
    op.create_index(
        "ix_conversions_unrewarded",
        "conversions",
        ["rewarded_at", "occurred_at", "conversion_id"],
    )
    op.create_index("ix_asks_referral_code", "asks", ["referral_code"])


def downgrade() -> None:
    op.drop_index("ix_asks_referral_code", table_name="asks")
    op.drop_index("ix_conversions_unrewarded", table_name="conversions")
    op.drop_index("ix_conversions_referee_contact", table_name="conversions")
    op.drop_index("ix_conversions_referee_account", table_name="conversions")
