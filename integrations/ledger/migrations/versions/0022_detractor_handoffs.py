"""detractor hand-offs: each detractor follow-up is told to a person once (an email to
the owner, a CRM task on the contact), recorded before anything is sent; follow-ups
stored before this revision are marked ``skipped`` so the owner is not flooded with old
detractors the day it ships (they stay listed in follow_ups)

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
TABLE = "detractor_handoffs"
EMAIL_STATUSES = "'queued', 'sending', 'accepted', 'failed', 'unknown', 'skipped'"
CRM_STATUSES = "'queued', 'sending', 'created', 'failed', 'unknown'"
# The UPDATEs a hand-off accepts: its identity unchanged, a final status (and what the
# provider answered) kept, and no CRM channel opened on a row written without one.
_ALLOWED = (
    "NEW.source_event = OLD.source_event AND NEW.contact_id {same} OLD.contact_id"
    " AND NEW.created_at = OLD.created_at"
    " AND (OLD.email_status NOT IN ('accepted', 'skipped')"
    "      OR (NEW.email_status = OLD.email_status AND NEW.email_ref {same} OLD.email_ref"
    "          AND NEW.email_at {same} OLD.email_at))"
    " AND (OLD.crm_status IS NULL OR OLD.crm_status <> 'created'"
    "      OR (NEW.crm_status = OLD.crm_status AND NEW.crm_ref {same} OLD.crm_ref))"
    " AND (OLD.crm_status IS NOT NULL OR NEW.crm_status IS NULL)"
)
_MESSAGE = "a detractor hand-off is kept: only an open channel may change"


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("source_event", sa.String(length=330), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("email_status", sa.String(length=16), nullable=False),
        sa.Column("email_ref", sa.String(length=128), nullable=True),
        sa.Column("email_error", sa.String(length=512), nullable=True),
        sa.Column("email_at", sa.DateTime(), nullable=True),
        sa.Column("crm_status", sa.String(length=16), nullable=True),
        sa.Column("crm_ref", sa.String(length=128), nullable=True),
        sa.Column("crm_error", sa.String(length=512), nullable=True),
        sa.Column("crm_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            f"email_status in ({EMAIL_STATUSES})", name=op.f(f"ck_{TABLE}_email_status")
        ),
        sa.CheckConstraint(
            f"crm_status IS NULL OR crm_status in ({CRM_STATUSES})",
            name=op.f(f"ck_{TABLE}_crm_status"),
        ),
        sa.ForeignKeyConstraint(
            ["source_event"],
            ["follow_ups.source_event"],
            name=op.f(f"fk_{TABLE}_source_event_follow_ups"),
        ),
        sa.PrimaryKeyConstraint("source_event", name=op.f(f"pk_{TABLE}")),
    )
    op.create_index(
        f"ix_{TABLE}_email_status", TABLE, ["email_status", "source_event"], unique=False
    )
    op.create_index(f"ix_{TABLE}_crm_status", TABLE, ["crm_status", "source_event"], unique=False)
    op.get_bind().execute(
        sa.text(
            "INSERT INTO detractor_handoffs (source_event, contact_id, created_at, "
            "email_status, email_error) "
            "SELECT source_event, contact_id, :now, 'skipped', :why FROM follow_ups"
        ),
        {
            "now": datetime.now(UTC).replace(tzinfo=None),
            "why": "stored before hand-offs existed (revision 0022)",
        },
    )

    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{TABLE} is append-only: DELETE refused'); END"
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_kept BEFORE UPDATE ON {TABLE} "
            f"WHEN NOT ({_ALLOWED.format(same='IS')}) "
            f"BEGIN SELECT RAISE(ABORT, '{_MESSAGE}'); END"
        )
    else:
        # ledger_refuse() is the function revision 0001 created for every guard.
        op.execute(
            f"CREATE TRIGGER {TABLE}_no_delete BEFORE DELETE ON {TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
        )
        op.execute(
            f"""
            CREATE FUNCTION {TABLE}_kept() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NOT ({_ALLOWED.format(same="IS NOT DISTINCT FROM")}) THEN
                RAISE EXCEPTION '{_MESSAGE}' USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN NEW;
            END $$
            """
        )
        op.execute(
            f"CREATE TRIGGER {TABLE}_kept BEFORE UPDATE ON {TABLE} "
            f"FOR EACH ROW EXECUTE FUNCTION {TABLE}_kept()"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    on = f" ON {TABLE}" if postgres else ""
    op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_no_delete{on}")
    op.execute(f"DROP TRIGGER IF EXISTS {TABLE}_kept{on}")
    if postgres:
        op.execute(f"DROP FUNCTION IF EXISTS {TABLE}_kept()")
    op.drop_index(f"ix_{TABLE}_crm_status", table_name=TABLE)
    op.drop_index(f"ix_{TABLE}_email_status", table_name=TABLE)
    op.drop_table(TABLE)
