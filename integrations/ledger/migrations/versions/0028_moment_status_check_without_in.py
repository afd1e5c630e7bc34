"""moment status check without IN: ``status = 'new' OR ...`` instead of ``status in (...)``

The same rule, written so SQLite checks it cheaply. SQLite 3.40 evaluates a CHECK
``x IN ('a', 'b', 'c')`` by building a temporary index of the three values for every row
it writes (``OpenEphemeral`` inside the insert loop); detection writes hundreds of
thousands of moments in one statement, and that index was about a quarter of the
statement's work. The ``OR`` form accepts and refuses exactly the same rows (``status``
is ``NOT NULL``), so no row is read or changed.

SQLite: the table's stored definition is edited in place, the procedure SQLite documents
for changing a CHECK constraint without copying the table (``writable_schema``, then a
new ``schema_version``). A definition that does not read as expected is left alone: the
old form stays correct, only slower. PostgreSQL: the constraint is dropped and added
again under the same name.

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0027"
branch_labels = None
depends_on = None

# Frozen copies, so this file keeps meaning what it meant.
_TABLE = "moments"
_NAME = "ck_moments_status"
_IN = "status in ('new', 'asked', 'skipped')"
_OR = "status = 'new' OR status = 'asked' OR status = 'skipped'"


def upgrade() -> None:
    _rewrite(_IN, _OR)


def downgrade() -> None:
    _rewrite(_OR, _IN)


def _rewrite(before: str, after: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        op.drop_constraint(op.f(_NAME), _TABLE, type_="check")
        op.create_check_constraint(op.f(_NAME), _TABLE, sa.text(after))
        return
    definition = bind.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
        {"name": _TABLE},
    ).scalar_one()
    old = f"CONSTRAINT {_NAME} CHECK ({before})"
    if definition.count(old) != 1:
        return
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar_one())
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    try:
        bind.execute(
            sa.text("UPDATE sqlite_master SET sql = :sql WHERE type = 'table' AND name = :name"),
            {"sql": definition.replace(old, f"CONSTRAINT {_NAME} CHECK ({after})"), "name": _TABLE},
        )
        # A new schema version makes every connection read the edited definition.
        bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    finally:
        bind.exec_driver_sql("PRAGMA writable_schema = OFF")
