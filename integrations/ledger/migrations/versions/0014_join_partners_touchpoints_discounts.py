"""join the partner registration (0011), touchpoint and reward terms (0012) and
referee discount (0013) branches into one head

Revision ID: 0014
Revises: 0011, 0012, 0013
Create Date: 2026-11-24
"""

from __future__ import annotations

revision = "0014"
down_revision = ("0011", "0012", "0013")
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing to change: the three branches touch different tables."""


def downgrade() -> None:
    """Nothing to change."""
