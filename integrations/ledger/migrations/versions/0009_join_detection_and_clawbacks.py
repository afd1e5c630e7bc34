"""join the detection (0007) and clawback (0008) branches into one head

Revision ID: 0009
Revises: 0007, 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

revision = "0009"
down_revision = ("0007", "0008")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the two branches touch different tables."""


def downgrade() -> None:
    """Nothing to change."""
