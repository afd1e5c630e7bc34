"""conversion payments: the provider payments behind each conversion

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversion_payments",
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("payment_ref", sa.String(length=128), nullable=False),
        sa.Column("conversion_id", sa.String(length=36), nullable=False),
        sa.Column("customer_ref", sa.String(length=128), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "amount_minor >= 0", name=op.f("ck_conversion_payments_amount_not_negative")
        ),
        sa.CheckConstraint(
            "length(currency) = 3", name=op.f("ck_conversion_payments_currency_iso")
        ),
        sa.ForeignKeyConstraint(
            ["conversion_id"],
            ["conversions.conversion_id"],
            name=op.f("fk_conversion_payments_conversion_id_conversions"),
        ),
        sa.PrimaryKeyConstraint("provider", "payment_ref", name=op.f("pk_conversion_payments")),
    )
    with op.batch_alter_table("conversion_payments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_conversion_payments_conversion_id"), ["conversion_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_conversion_payments_customer_ref"), ["customer_ref"], unique=False
        )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER conversion_payments_no_delete BEFORE DELETE ON conversion_payments "
            "BEGIN SELECT RAISE(ABORT, 'conversion_payments is append-only: DELETE refused'); END"
        )
    else:
        op.execute(
            "CREATE TRIGGER conversion_payments_no_delete BEFORE DELETE ON conversion_payments "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
        )


def downgrade() -> None:
    on = " ON conversion_payments" if op.get_bind().dialect.name == "postgresql" else ""
    op.execute(f"DROP TRIGGER IF EXISTS conversion_payments_no_delete{on}")
    with op.batch_alter_table("conversion_payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversion_payments_customer_ref"))
        batch_op.drop_index(batch_op.f("ix_conversion_payments_conversion_id"))
    op.drop_table("conversion_payments")
