"""approvers: the registry of who may decide on rewards, its change log, the one-time
codes spent, the refused decisions; approval decisions name their approver's id

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
NO_DELETE = ("approvers", "approver_events", "approver_codes_used", "approval_attempts")
NO_UPDATE = ("approver_events", "approver_codes_used", "approval_attempts")


def upgrade() -> None:
    op.create_table(
        "approvers",
        sa.Column("approver_id", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=True),
        sa.Column("limit_minor", sa.BigInteger(), nullable=False),
        sa.Column("limit_currency", sa.String(length=3), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("demo", sa.Boolean(), nullable=False),
        sa.Column("secret_encrypted", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("limit_minor >= 0", name=op.f("ck_approvers_limit_not_negative")),
        sa.CheckConstraint(
            "length(limit_currency) = 3", name=op.f("ck_approvers_limit_currency_iso")
        ),
        sa.PrimaryKeyConstraint("approver_id", name=op.f("pk_approvers")),
        sa.UniqueConstraint("email", name=op.f("uq_approvers_email")),
    )
    op.create_table(
        "approver_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("approver_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "action in ('added', 'enrolled', 'disabled', 'enabled')",
            name=op.f("ck_approver_events_action_known"),
        ),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["approvers.approver_id"],
            name=op.f("fk_approver_events_approver_id_approvers"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_approver_events")),
    )
    with op.batch_alter_table("approver_events", schema=None) as batch_op:
        batch_op.create_index("ix_approver_events_approver_id", ["approver_id"], unique=False)
    op.create_table(
        "approver_codes_used",
        sa.Column("approver_id", sa.String(length=64), nullable=False),
        sa.Column("time_step", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["approver_id"],
            ["approvers.approver_id"],
            name=op.f("fk_approver_codes_used_approver_id_approvers"),
        ),
        sa.PrimaryKeyConstraint("approver_id", "time_step", name=op.f("pk_approver_codes_used")),
    )
    op.create_table(
        "approval_attempts",
        sa.Column("attempt_id", sa.String(length=36), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("claimed_approver_id", sa.String(length=64), nullable=False),
        sa.Column("wrong_code", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("flow_run_id", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("attempt_id", name=op.f("pk_approval_attempts")),
    )
    with op.batch_alter_table("approval_attempts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_approval_attempts_claimed_at", ["claimed_approver_id", "at"], unique=False
        )
    # A plain ADD COLUMN: SQLite keeps the table (and its append-only triggers).
    op.add_column(
        "approval_decisions", sa.Column("approver_id", sa.String(length=64), nullable=True)
    )

    dialect = op.get_bind().dialect.name
    guarded = [(t, "DELETE") for t in NO_DELETE] + [(t, "UPDATE") for t in NO_UPDATE]
    for table, verb in guarded:
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

    # Who an approver is, their limit and whether they are a demo one never change in
    # place: a new limit is a new approver (the old one disabled), so every decision
    # keeps meaning what it meant. Only ``active`` and the enrolled secret move.
    fixed = (
        "approver_id",
        "display_name",
        "email",
        "contact_id",
        "limit_minor",
        "limit_currency",
        "demo",
        "created_at",
    )
    if dialect == "sqlite":
        # Integer minor units only, as 0017 does for every money column.
        wrong = "typeof(NEW.limit_minor) NOT IN ('integer', 'null')"
        for verb, event in (("insert", "INSERT"), ("update", "UPDATE OF limit_minor")):
            op.execute(
                f"CREATE TRIGGER approvers_minor_integer_{verb} BEFORE {event} ON approvers "
                f"WHEN {wrong} BEGIN SELECT RAISE(ABORT, 'approvers: limit_minor must be "
                "integer minor units'); END"
            )
        changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in fixed)
        op.execute(
            f"CREATE TRIGGER approvers_fixed BEFORE UPDATE ON approvers WHEN {changed} "
            "BEGIN SELECT RAISE(ABORT, 'an approver''s identity, limit and demo flag never "
            "change: add a new approver'); END"
        )
    else:
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in fixed)
        op.execute(
            f"""
            CREATE FUNCTION approvers_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF {changed} THEN
                    RAISE EXCEPTION 'an approver''s identity, limit and demo flag never change';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER approvers_fixed BEFORE UPDATE ON approvers "
            "FOR EACH ROW EXECUTE FUNCTION approvers_fixed()"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    guarded = [(t, "DELETE") for t in NO_DELETE] + [(t, "UPDATE") for t in NO_UPDATE]
    for table, verb in guarded:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on}")
    op.execute(f"DROP TRIGGER IF EXISTS approvers_fixed{' ON approvers' if postgres else ''}")
    if not postgres:
        for verb in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS approvers_minor_integer_{verb}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS approvers_fixed()")
    # A plain DROP COLUMN (SQLite 3.35+ too): a batch rebuild would drop the table's
    # triggers, those of 0001 and 0017 alike.
    op.execute("ALTER TABLE approval_decisions DROP COLUMN approver_id")
    with op.batch_alter_table("approval_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_attempts_claimed_at")
    op.drop_table("approval_attempts")
    op.drop_table("approver_codes_used")
    with op.batch_alter_table("approver_events", schema=None) as batch_op:
        batch_op.drop_index("ix_approver_events_approver_id")
    op.drop_table("approver_events")
    op.drop_table("approvers")
