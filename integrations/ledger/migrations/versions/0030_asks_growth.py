"""indexes of only what is waiting: pending moments by time, coded events not examined

``ix_moments_status`` (status, occurred_at) held every moment ever decided: closing a
moment moved its entry from the ``new`` range to the ``asked`` or ``skipped`` one, a
write into an index as large as the whole history, and deciding paged through it with
a sort of each time's ties. ``ix_moments_pending`` (occurred_at, moment_id) holds only
the moments still ``new``, in the order deciding reads them: closing one only removes
its entry, and the index is as large as what waits, not as the ledger.

``ix_source_events_unconverted`` (id) holds only the coded CRM events not examined
yet: ``events_to_convert`` read the events table by id from the start, every event of
the company, at each run, to find the few that carry a code.

Both are partial: queries name ``status = 'new'`` as a literal (not a bound parameter)
so that the planners match them to the index's WHERE.

Revision ID: 0030a
Revises: 0029r
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0030a"
down_revision = "0029r"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
PENDING = "status = 'new'"
UNCONVERTED = "converted_at IS NULL AND referral_code IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_moments_pending",
        "moments",
        ["occurred_at", "moment_id"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    op.drop_index("ix_moments_status", table_name="moments")
    op.create_index(
        "ix_source_events_unconverted",
        "source_events",
        ["id"],
        sqlite_where=sa.text(UNCONVERTED),
        postgresql_where=sa.text(UNCONVERTED),
    )


def downgrade() -> None:
    op.drop_index("ix_source_events_unconverted", table_name="source_events")
    op.create_index("ix_moments_status", "moments", ["status", "occurred_at"])
    op.drop_index("ix_moments_pending", table_name="moments")
