"""touchpoints and reward terms: who touched each referee (for multi-touch attribution),
and how each reward was reached (earning time for caps, tier count, cap applied)

Revision ID: 0012
Revises: 0010
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
GUARDED = (
    ("touchpoints", "DELETE"),
    ("touchpoints", "UPDATE"),
    ("reward_terms", "DELETE"),
    ("reward_terms", "UPDATE"),
)


def upgrade() -> None:
    op.create_table(
        "touchpoints",
        sa.Column("touchpoint_id", sa.String(length=36), nullable=False),
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=330), nullable=False),
        sa.Column("referee_account_id", sa.String(length=128), nullable=True),
        sa.Column("referee_contact_id", sa.String(length=128), nullable=True),
        sa.Column("referee_customer", sa.String(length=128), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "kind in ('code', 'ask_click', 'registration')", name=op.f("ck_touchpoints_kind")
        ),
        sa.CheckConstraint(
            "referee_account_id is not null or referee_contact_id is not null"
            " or referee_customer is not null",
            name=op.f("ck_touchpoints_names_a_referee"),
        ),
        sa.PrimaryKeyConstraint("touchpoint_id", name=op.f("pk_touchpoints")),
    )
    with op.batch_alter_table("touchpoints", schema=None) as batch_op:
        for column in ("referrer_id", "referee_account_id", "referee_contact_id"):
            batch_op.create_index(batch_op.f(f"ix_touchpoints_{column}"), [column], unique=False)
        batch_op.create_index(
            batch_op.f("ix_touchpoints_referee_customer"), ["referee_customer"], unique=False
        )
    op.create_table(
        "reward_terms",
        sa.Column("reward_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("earned_at", sa.DateTime(), nullable=False),
        sa.Column("period", sa.String(length=128), nullable=True),
        sa.Column("referral_number", sa.Integer(), nullable=True),
        sa.Column("uncapped_minor", sa.BigInteger(), nullable=False),
        sa.Column("capped_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "uncapped_minor >= 0", name=op.f("ck_reward_terms_uncapped_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["reward_id"], ["rewards.reward_id"], name=op.f("fk_reward_terms_reward_id_rewards")
        ),
        sa.PrimaryKeyConstraint("reward_id", name=op.f("pk_reward_terms")),
    )
    with op.batch_alter_table("reward_terms", schema=None) as batch_op:
        batch_op.create_index("ix_reward_terms_earned_at", ["earned_at"], unique=False)

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
    with op.batch_alter_table("reward_terms", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_terms_earned_at")
    op.drop_table("reward_terms")
    with op.batch_alter_table("touchpoints", schema=None) as batch_op:
        for column in (
            "referee_customer",
            "referee_contact_id",
            "referee_account_id",
            "referrer_id",
        ):
            batch_op.drop_index(batch_op.f(f"ix_touchpoints_{column}"))
    op.drop_table("touchpoints")
