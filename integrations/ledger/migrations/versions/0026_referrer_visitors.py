"""referrer visitors: the visitor hashes seen on a referrer's own page (opened with a
verified magic link), so a click on their link from one of them is known as their own
and neither counted nor taken as a touch, and a conversion reached only through such
clicks is flagged. One row per (referrer, visitor); no raw cookie. Append-only on both
databases.

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
GUARDED = (("referrer_visitors", "DELETE"), ("referrer_visitors", "UPDATE"))


def upgrade() -> None:
    op.create_table(
        "referrer_visitors",
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("visitor_hash", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "length(visitor_hash) = 64", name=op.f("ck_referrer_visitors_visitor_hash_hex")
        ),
        sa.PrimaryKeyConstraint("referrer_id", "visitor_hash", name=op.f("pk_referrer_visitors")),
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
    op.drop_table("referrer_visitors")
