"""shards (issue 17): one row per (stage run key, shard), claimed with a lease
(``claimed_by``, ``lease_until``), counted (``attempts``) and done once (``done_at``,
with the shard's ``outcome``). Triggers on both databases: a done shard never changes
(it cannot be un-done nor claimed again), a shard is never deleted, its key and size
never change, attempts only grow, and the done mark keeps the claimant who earned it.

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0027"
down_revision = "0026"
branch_labels = None
depends_on = None

# Copied here, not imported, so this migration keeps meaning what it meant: each rule is
# (trigger name suffix, condition under which an UPDATE is refused, message).
UPDATE_RULES = (
    ("done_fixed", "OLD.done_at IS NOT NULL", "shards: a done shard never changes"),
    (
        "key_fixed",
        "NEW.run_key <> OLD.run_key OR NEW.shard <> OLD.shard OR NEW.of_shards <> OLD.of_shards",
        "shards: a shard keeps its run key, number and size",
    ),
    ("attempts_grow", "NEW.attempts < OLD.attempts", "shards: attempts only grow"),
    (
        "done_by_holder",
        "NEW.done_at IS NOT NULL AND (OLD.claimed_by IS NULL OR NEW.claimed_by <> OLD.claimed_by)",
        "shards: only the worker holding a shard marks it done",
    ),
)


def upgrade() -> None:
    op.create_table(
        "shards",
        sa.Column("run_key", sa.String(length=128), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("of_shards", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "shard >= 0 AND shard < of_shards", name=op.f("ck_shards_shard_in_range")
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_shards_attempts_not_negative")),
        sa.CheckConstraint(
            "done_at IS NULL OR claimed_by IS NOT NULL", name=op.f("ck_shards_done_by_a_claimant")
        ),
        sa.PrimaryKeyConstraint("run_key", "shard", name=op.f("pk_shards")),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute(
            "CREATE TRIGGER shards_no_delete BEFORE DELETE ON shards "
            "BEGIN SELECT RAISE(ABORT, 'shards is append-only: DELETE refused'); END"
        )
        for name, condition, message in UPDATE_RULES:
            op.execute(
                f"CREATE TRIGGER shards_{name} BEFORE UPDATE ON shards WHEN {condition} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
    elif dialect == "postgresql":
        # ledger_refuse() is the function revision 0001 created for every guard.
        op.execute(
            "CREATE TRIGGER shards_no_delete BEFORE DELETE ON shards "
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse()"
        )
        body = "\n".join(
            f"IF {condition} THEN RAISE EXCEPTION '{message}' "
            "USING ERRCODE = 'integrity_constraint_violation'; END IF;"
            for _, condition, message in UPDATE_RULES
        )
        op.execute(
            "CREATE FUNCTION shards_guard() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{body}\nRETURN NEW;\nEND $$"
        )
        op.execute(
            "CREATE TRIGGER shards_guard BEFORE UPDATE ON shards "
            "FOR EACH ROW EXECUTE FUNCTION shards_guard()"
        )
    else:
        raise RuntimeError(f"no shard guards written for {dialect}")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS shards_guard ON shards")
        op.execute("DROP FUNCTION IF EXISTS shards_guard()")
        op.execute("DROP TRIGGER IF EXISTS shards_no_delete ON shards")
    else:
        op.execute("DROP TRIGGER IF EXISTS shards_no_delete")
        for name, _, _ in UPDATE_RULES:
            op.execute(f"DROP TRIGGER IF EXISTS shards_{name}")
    op.drop_table("shards")
