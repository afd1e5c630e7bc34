"""quarantine and destinations: the quarantine's excerpts can be purged (purged_at) and
its rows are otherwise kept as written; payout_destination_changes records every change
of a referrer's Stripe connected account or customer id, append-only

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
GUARDED = (
    ("payout_destination_changes", "DELETE"),
    ("payout_destination_changes", "UPDATE"),
    ("quarantine", "DELETE"),
)
# The one UPDATE a quarantine row accepts: its excerpt purged (raw emptied, purged_at
# set once), every other column as it was.
_PURGE_ONLY = (
    "NEW.raw = '' AND OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL"
    " AND NEW.id = OLD.id AND NEW.source = OLD.source AND NEW.record = OLD.record"
    " AND {same_field} AND NEW.reason = OLD.reason AND NEW.stage = OLD.stage"
    " AND NEW.created_at = OLD.created_at"
)
_PURGE_MESSAGE = "quarantine rows are kept: only their excerpt may be purged"


def upgrade() -> None:
    op.create_table(
        "payout_destination_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("old_value", sa.String(length=64), nullable=True),
        sa.Column("new_value", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "field in ('stripe_account_id', 'stripe_customer_id')",
            name=op.f("ck_payout_destination_changes_destination_field"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payout_destination_changes")),
    )
    op.create_index(
        "ix_payout_destination_changes_contact_id",
        "payout_destination_changes",
        ["contact_id", "seen_at"],
        unique=False,
    )
    op.add_column("quarantine", sa.Column("purged_at", sa.DateTime(), nullable=True))
    op.create_index("ix_quarantine_created_at", "quarantine", ["created_at"], unique=False)

    dialect = op.get_bind().dialect.name
    for table, verb in GUARDED:
        if dialect == "sqlite":
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
            )
        else:
            # ledger_refuse() is the function revision 0001 created for every guard.
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
            )
    if dialect == "sqlite":
        condition = _PURGE_ONLY.format(same_field="NEW.field IS OLD.field")
        op.execute(
            "CREATE TRIGGER quarantine_purge_only BEFORE UPDATE ON quarantine "
            f"WHEN NOT ({condition}) "
            f"BEGIN SELECT RAISE(ABORT, '{_PURGE_MESSAGE}'); END"
        )
    else:
        condition = _PURGE_ONLY.format(same_field="NEW.field IS NOT DISTINCT FROM OLD.field")
        op.execute(
            f"""
            CREATE FUNCTION quarantine_purge_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NOT ({condition}) THEN
                RAISE EXCEPTION '{_PURGE_MESSAGE}'
                  USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN NEW;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER quarantine_purge_only BEFORE UPDATE ON quarantine "
            "FOR EACH ROW EXECUTE FUNCTION quarantine_purge_only()"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, verb in GUARDED:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on}")
    op.execute(
        f"DROP TRIGGER IF EXISTS quarantine_purge_only{' ON quarantine' if postgres else ''}"
    )
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS quarantine_purge_only()")
    op.drop_index("ix_quarantine_created_at", table_name="quarantine")
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_column("purged_at")
    op.drop_index(
        "ix_payout_destination_changes_contact_id", table_name="payout_destination_changes"
    )
    op.drop_table("payout_destination_changes")
