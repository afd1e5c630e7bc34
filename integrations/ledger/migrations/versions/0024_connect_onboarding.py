"""connect onboarding: each referrer's Stripe Connect account with the idempotency key
that creates it (stored before the call; the account id set once, never replaced),
and the append-only log of the states read from Stripe. Neither table is deleted from,
on both databases.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
GUARDED = (
    ("connect_accounts", "DELETE"),
    ("connect_account_states", "DELETE"),
    ("connect_account_states", "UPDATE"),
)
_ONCE = "connect_accounts: the account id is set once and never replaced"


def upgrade() -> None:
    op.create_table(
        "connect_accounts",
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attached_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("referrer_id", name=op.f("pk_connect_accounts")),
        sa.UniqueConstraint("account_id", name=op.f("uq_connect_accounts_account_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_connect_accounts_idempotency_key")),
    )
    op.create_table(
        "connect_account_states",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("details_submitted", sa.Boolean(), nullable=False),
        sa.Column("charges_enabled", sa.Boolean(), nullable=False),
        sa.Column("payouts_enabled", sa.Boolean(), nullable=False),
        sa.Column("transfers_active", sa.Boolean(), nullable=False),
        sa.Column("seen_by", sa.String(length=16), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('onboarding', 'enabled', 'restricted')",
            name=op.f("ck_connect_account_states_connect_status"),
        ),
        sa.CheckConstraint(
            "seen_by in ('return', 'webhook', 'payout-run')",
            name=op.f("ck_connect_account_states_seen_by"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connect_account_states")),
    )
    with op.batch_alter_table("connect_account_states", schema=None) as batch_op:
        batch_op.create_index(
            "ix_connect_account_states_referrer_id", ["referrer_id", "id"], unique=False
        )

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
    # The only update a connect_accounts row accepts: its account id (and when it was
    # attached) filled in from NULL, everything else as it was.
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER connect_accounts_once BEFORE UPDATE ON connect_accounts "
            "WHEN OLD.account_id IS NOT NULL OR NEW.account_id IS NULL "
            "OR NEW.referrer_id IS NOT OLD.referrer_id "
            "OR NEW.idempotency_key IS NOT OLD.idempotency_key "
            "OR NEW.created_at IS NOT OLD.created_at "
            f"BEGIN SELECT RAISE(ABORT, '{_ONCE}'); END"
        )
    else:
        op.execute(
            f"""
            CREATE FUNCTION connect_accounts_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.account_id IS NOT NULL OR NEW.account_id IS NULL
                   OR NEW.referrer_id IS DISTINCT FROM OLD.referrer_id
                   OR NEW.idempotency_key IS DISTINCT FROM OLD.idempotency_key
                   OR NEW.created_at IS DISTINCT FROM OLD.created_at THEN
                    RAISE EXCEPTION '{_ONCE}'
                      USING ERRCODE = 'integrity_constraint_violation';
                END IF;
                RETURN NEW;
            END $$
            """
        )
        op.execute(
            "CREATE TRIGGER connect_accounts_once BEFORE UPDATE ON connect_accounts "
            "FOR EACH ROW EXECUTE FUNCTION connect_accounts_once()"
        )


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    on = " ON connect_accounts" if postgres else ""
    op.execute(f"DROP TRIGGER IF EXISTS connect_accounts_once{on}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS connect_accounts_once()")
    for table, verb in GUARDED:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on}")
    with op.batch_alter_table("connect_account_states", schema=None) as batch_op:
        batch_op.drop_index("ix_connect_account_states_referrer_id")
    op.drop_table("connect_account_states")
    op.drop_table("connect_accounts")
