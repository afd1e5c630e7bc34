"""an index of each contact's NPS answers by time, for the detractor rule: eligibility
reads every contact's answers of the last detractor_window_days in each batch of
decisions, and without it each batch scanned every stored event (about 0.6 s per
batch of 1,000 moments at a million events, growing with the events)

Partial (NPS answers only): it costs ingest a third of a full index on the busiest
table. The queries that use it name the type as a literal, not a bound parameter,
or the planners cannot match it to the index's WHERE.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
NPS_ANSWERS = "type = 'nps_response'"


def upgrade() -> None:
    op.create_index(
        "ix_source_events_nps_answers",
        "source_events",
        ["contact_id", "occurred_at"],
        sqlite_where=sa.text(NPS_ANSWERS),
        postgresql_where=sa.text(NPS_ANSWERS),
    )


def downgrade() -> None:
    op.drop_index("ix_source_events_nps_answers", table_name="source_events")
