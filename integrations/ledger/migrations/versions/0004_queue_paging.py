"""queue paging: queued asks and notifications are paged by (status, id); joins the
webhook-inbox (0002) and approval-reminder (0003) branches

Revision ID: 0004
Revises: 0002, 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = ("0002", "0003")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asks", schema=None) as batch_op:
        batch_op.drop_index("ix_asks_status")
        batch_op.create_index("ix_asks_status", ["status", "ask_id"], unique=False)
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_status")
        batch_op.create_index(
            "ix_notifications_status", ["status", "notification_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("ix_notifications_status")
        batch_op.create_index("ix_notifications_status", ["status"], unique=False)
    with op.batch_alter_table("asks", schema=None) as batch_op:
        batch_op.drop_index("ix_asks_status")
        batch_op.create_index("ix_asks_status", ["status"], unique=False)
