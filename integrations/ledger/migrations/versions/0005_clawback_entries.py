"""clawback entries: ledger entry kinds clawed_back and netted

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD = "kind in ('accrued', 'adjusted', 'cancelled', 'paid', 'reversed')"
NEW = "kind in ('accrued', 'adjusted', 'cancelled', 'paid', 'reversed', 'clawed_back', 'netted')"


def _set_kinds(check: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite changes a CHECK by rebuilding the table, which drops its triggers:
        # put the append-only guards back at once, in the same transaction.
        with op.batch_alter_table("ledger_entries", recreate="always") as batch_op:
            batch_op.drop_constraint(op.f("ck_ledger_entries_kind"), type_="check")
            batch_op.create_check_constraint("kind", check)
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_entries_no_{verb.lower()} BEFORE {verb} ON "
                f"ledger_entries BEGIN SELECT RAISE(ABORT, 'ledger_entries is append-only: "
                f"{verb} refused'); END"
            )
    else:
        op.drop_constraint(op.f("ck_ledger_entries_kind"), "ledger_entries", type_="check")
        op.create_check_constraint("kind", "ledger_entries", check)


def upgrade() -> None:
    _set_kinds(NEW)


def downgrade() -> None:
    _set_kinds(OLD)
