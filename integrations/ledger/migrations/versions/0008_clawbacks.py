"""clawbacks: what refunds, chargebacks and churn took from rewards; the reversal outbox

Revision ID: 0008
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

# The append-only guards of these tables (as integrations.ledger.tables.clawbacks).
GUARDED = (("clawbacks", "DELETE"), ("clawbacks", "UPDATE"), ("reversals", "DELETE"))


def upgrade() -> None:
    op.create_table(
        "clawbacks",
        sa.Column("clawback_id", sa.String(length=36), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("payment_key", sa.String(length=128), nullable=False),
        sa.Column("payment_minor", sa.BigInteger(), nullable=False),
        sa.Column("refunded_minor", sa.BigInteger(), nullable=False),
        sa.Column("disputed_minor", sa.BigInteger(), nullable=False),
        sa.Column("cancelled_minor", sa.BigInteger(), nullable=False),
        sa.Column("clawed_back_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status_before", sa.String(length=24), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "cause in ('refund', 'chargeback', 'churn')", name=op.f("ck_clawbacks_cause")
        ),
        sa.CheckConstraint(
            "cancelled_minor >= 0 AND clawed_back_minor >= 0 AND refunded_minor >= 0 "
            "AND disputed_minor >= 0 AND payment_minor >= 0",
            name=op.f("ck_clawbacks_amounts_not_negative"),
        ),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_clawbacks_currency_iso")),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.reward_id"], name=op.f("fk_clawbacks_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("clawback_id", name=op.f("pk_clawbacks")),
        sa.UniqueConstraint("reward_id", "event_id", name=op.f("uq_clawbacks_reward_id_event_id")),
    )
    with op.batch_alter_table("clawbacks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clawbacks_reward_id"), ["reward_id"], unique=False)

    op.create_table(
        "reversals",
        sa.Column("reversal_id", sa.String(length=36), nullable=False),
        sa.Column("clawback_id", sa.String(length=36), nullable=False),
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("payout_id", sa.String(length=36), nullable=False),
        sa.Column("rail", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=True),
        sa.Column("payout_ref", sa.String(length=128), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('pending', 'succeeded', 'unrecovered', 'failed')",
            name=op.f("ck_reversals_status"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_reversals_amount_positive")),
        sa.CheckConstraint("length(currency) = 3", name=op.f("ck_reversals_currency_iso")),
        sa.ForeignKeyConstraint(
            ["clawback_id"],
            ["clawbacks.clawback_id"],
            name=op.f("fk_reversals_clawback_id_clawbacks"),
        ),
        sa.ForeignKeyConstraint(
            ["payout_id"], ["payouts.payout_id"], name=op.f("fk_reversals_payout_id_payouts")
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.reward_id"], name=op.f("fk_reversals_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("reversal_id", name=op.f("pk_reversals")),
        sa.UniqueConstraint("clawback_id", name=op.f("uq_reversals_clawback_id")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_reversals_idempotency_key")),
    )
    with op.batch_alter_table("reversals", schema=None) as batch_op:
        batch_op.create_index("ix_reversals_status", ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_reversals_reward_id"), ["reward_id"], unique=False)

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


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, verb in GUARDED:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on}")
    with op.batch_alter_table("reversals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reversals_reward_id"))
        batch_op.drop_index("ix_reversals_status")
    op.drop_table("reversals")
    with op.batch_alter_table("clawbacks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clawbacks_reward_id"))
    op.drop_table("clawbacks")
