"""partner registrations: first to register a company domain holds it for a window

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant.
HOLDING_SQL = "status in ('active', 'extended')"
# The history of claims documents conflicts: rows change status, never disappear.
GUARDED = (("partner_registrations", "DELETE"),)


def upgrade() -> None:
    op.create_table(
        "partner_registrations",
        sa.Column("registration_id", sa.String(length=36), nullable=False),
        sa.Column("partner_id", sa.String(length=128), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("contact_ref", sa.String(length=128), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("extensions", sa.Integer(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(length=128), nullable=True),
        sa.Column("conversion_id", sa.String(length=36), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('active', 'extended', 'expired', 'converted')",
            name=op.f("ck_partner_registrations_status"),
        ),
        sa.CheckConstraint(
            "expires_at > registered_at",
            name=op.f("ck_partner_registrations_expires_after_registered"),
        ),
        sa.CheckConstraint(
            "extensions >= 0", name=op.f("ck_partner_registrations_extensions_not_negative")
        ),
        sa.CheckConstraint(
            "(status in ('active', 'extended') and closed_at is null) "
            "or (status in ('expired', 'converted') and closed_at is not null)",
            name=op.f("ck_partner_registrations_closed_when_closed"),
        ),
        sa.CheckConstraint(
            "status != 'converted' or conversion_id is not null",
            name=op.f("ck_partner_registrations_converted_by_conversion"),
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["contacts.contact_id"],
            name=op.f("fk_partner_registrations_partner_id_contacts"),
        ),
        sa.ForeignKeyConstraint(
            ["conversion_id"],
            ["conversions.conversion_id"],
            name=op.f("fk_partner_registrations_conversion_id_conversions"),
        ),
        sa.PrimaryKeyConstraint("registration_id", name=op.f("pk_partner_registrations")),
    )
    with op.batch_alter_table("partner_registrations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_partner_registrations_partner_id"), ["partner_id"], unique=False
        )
        batch_op.create_index(
            "ix_partner_registrations_domain", ["domain", "registered_at"], unique=False
        )
        batch_op.create_index(
            "ix_partner_registrations_status", ["status", "expires_at"], unique=False
        )
        batch_op.create_index(
            "uq_partner_registrations_holding_domain",
            ["domain"],
            unique=True,
            sqlite_where=sa.text(HOLDING_SQL),
            postgresql_where=sa.text(HOLDING_SQL),
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
    with op.batch_alter_table("partner_registrations", schema=None) as batch_op:
        batch_op.drop_index("uq_partner_registrations_holding_domain")
        batch_op.drop_index("ix_partner_registrations_status")
        batch_op.drop_index("ix_partner_registrations_domain")
        batch_op.drop_index(batch_op.f("ix_partner_registrations_partner_id"))
    op.drop_table("partner_registrations")
