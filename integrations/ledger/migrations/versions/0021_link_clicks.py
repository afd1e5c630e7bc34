"""link clicks: one row per request for a referrer's tracked link (``GET /r/<code>``),
with the keyed hash of the visitor cookie and whether it looked like a person, a bot
or a prefetch; no IP address, no user agent. Append-only on both databases.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
GUARDED = (("link_clicks", "DELETE"), ("link_clicks", "UPDATE"))


def upgrade() -> None:
    op.create_table(
        "link_clicks",
        sa.Column("click_id", sa.String(length=36), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("referrer_id", sa.String(length=128), nullable=False),
        sa.Column("clicked_at", sa.DateTime(), nullable=False),
        sa.Column("visitor_hash", sa.String(length=64), nullable=False),
        sa.Column("visitor_kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "visitor_kind in ('person', 'bot', 'prefetch')",
            name=op.f("ck_link_clicks_visitor_kind"),
        ),
        sa.CheckConstraint(
            "length(visitor_hash) = 64", name=op.f("ck_link_clicks_visitor_hash_hex")
        ),
        sa.ForeignKeyConstraint(
            ["code"], ["referral_codes.code"], name=op.f("fk_link_clicks_code_referral_codes")
        ),
        sa.PrimaryKeyConstraint("click_id", name=op.f("pk_link_clicks")),
    )
    with op.batch_alter_table("link_clicks", schema=None) as batch_op:
        batch_op.create_index(
            "ix_link_clicks_code_clicked_at", ["code", "clicked_at"], unique=False
        )
        batch_op.create_index(
            "ix_link_clicks_referrer_id_clicked_at", ["referrer_id", "clicked_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_link_clicks_visitor_hash"), ["visitor_hash"], unique=False
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
    with op.batch_alter_table("link_clicks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_link_clicks_visitor_hash"))
        batch_op.drop_index("ix_link_clicks_referrer_id_clicked_at")
        batch_op.drop_index("ix_link_clicks_code_clicked_at")
    op.drop_table("link_clicks")
