"""referee discounts (two-sided rewards): the program's coupon and a promotion code per
referral code, each an outbox with its idempotency key; the card fingerprint of a
conversion's payment, for the same-card fraud check

Revision ID: 0013
Revises: 0010
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("card_fingerprint", sa.String(length=64), nullable=True))

    op.create_table(
        "discount_coupons",
        sa.Column("coupon_id", sa.String(length=64), nullable=False),
        sa.Column("rail", sa.String(length=16), nullable=False),
        sa.Column("terms", sa.String(length=256), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('pending', 'succeeded', 'failed')",
            name=op.f("ck_discount_coupons_status"),
        ),
        sa.CheckConstraint(
            "rail in ('stripe', 'ledger_only')", name=op.f("ck_discount_coupons_rail")
        ),
        sa.PrimaryKeyConstraint("coupon_id", "rail", name=op.f("pk_discount_coupons")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_discount_coupons_idempotency_key")),
    )
    op.create_table(
        "referee_discounts",
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("rail", sa.String(length=16), nullable=False),
        sa.Column("contact_id", sa.String(length=128), nullable=False),
        sa.Column("coupon_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "status in ('pending', 'succeeded', 'failed')",
            name=op.f("ck_referee_discounts_status"),
        ),
        sa.CheckConstraint(
            "rail in ('stripe', 'ledger_only')", name=op.f("ck_referee_discounts_rail")
        ),
        sa.ForeignKeyConstraint(
            ["code"], ["referral_codes.code"], name=op.f("fk_referee_discounts_code_referral_codes")
        ),
        sa.PrimaryKeyConstraint("code", "rail", name=op.f("pk_referee_discounts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_referee_discounts_idempotency_key")),
    )
    with op.batch_alter_table("referee_discounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_referee_discounts_status", ["rail", "status", "code"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("referee_discounts", schema=None) as batch_op:
        batch_op.drop_index("ix_referee_discounts_status")
    op.drop_table("referee_discounts")
    op.drop_table("discount_coupons")
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.drop_column("card_fingerprint")
