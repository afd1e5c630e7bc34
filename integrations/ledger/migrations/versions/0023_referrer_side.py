"""referrer side: reward choices made on referrers' pages (latest wins) and requests
for a fresh page link (keyed hashes only, for the rate limit). Append-only on both
databases.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
TABLES = ("reward_choices", "page_link_requests")
GUARDED = tuple((t, verb) for t in TABLES for verb in ("DELETE", "UPDATE"))


def upgrade() -> None:
    op.create_table(
        "reward_choices",
        sa.Column(
            "choice_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("choice", sa.String(length=24), nullable=False),
        sa.Column("chosen_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "choice in ('cash', 'account_credit')", name=op.f("ck_reward_choices_choice")
        ),
        sa.PrimaryKeyConstraint("choice_id", name=op.f("pk_reward_choices")),
    )
    with op.batch_alter_table("reward_choices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_reward_choices_referrer_id", ["referrer_id", "choice_id"], unique=False
        )
    op.create_table(
        "page_link_requests",
        sa.Column("request_id", sa.String(length=36), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column("visitor_hash", sa.String(length=64), nullable=False),
        sa.Column("queued", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "length(address_hash) = 64", name=op.f("ck_page_link_requests_address_hash_hex")
        ),
        sa.CheckConstraint(
            "length(visitor_hash) = 64", name=op.f("ck_page_link_requests_visitor_hash_hex")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_page_link_requests")),
    )
    with op.batch_alter_table("page_link_requests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_page_link_requests_address", ["address_hash", "requested_at"], unique=False
        )
        batch_op.create_index(
            "ix_page_link_requests_visitor", ["visitor_hash", "requested_at"], unique=False
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


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    for table, verb in GUARDED:
        on = f" ON {table}" if postgres else ""
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}{on}")
    with op.batch_alter_table("page_link_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_page_link_requests_visitor")
        batch_op.drop_index("ix_page_link_requests_address")
    op.drop_table("page_link_requests")
    with op.batch_alter_table("reward_choices", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_choices_referrer_id")
    op.drop_table("reward_choices")
