"""moment ids are event keys: moments.moment_id and asks.moment_id widened to 330

Set-based detection writes a moment's id as its source event's key
(``<source>:<event_id>``, up to 321 characters) instead of a UUID computed per row.
Moments stored before keep their UUIDs, so no data changes on upgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen copies, so this file does not change when application code does.
_ID_NAMESPACE = uuid.UUID("6f1d3c52-9b1e-4a57-9f0e-2c4a8e7b5d10")
_WATERMARK = "__detection__"
_WIDE, _NARROW = 330, 36
# Children first: emptying them first means deleting the parents breaks no foreign key.
_TABLES = ("asks", "moments")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(_NARROW, _WIDE)
    else:
        _alter(_NARROW, _WIDE)


def downgrade() -> None:
    bind = op.get_bind()
    # Before 0007, detection marked each event it examined; the watermark goes away, so
    # the events under it get that mark, or the old stage would examine them again.
    watermark = bind.execute(
        sa.text("SELECT cursor FROM source_cursors WHERE source = :name"), {"name": _WATERMARK}
    ).scalar_one_or_none()
    if watermark is not None:
        bind.execute(
            sa.text(
                "UPDATE source_events SET detected_at = :now"
                " WHERE id <= :top AND detected_at IS NULL"
            ),
            {"now": datetime.now(UTC).replace(tzinfo=None), "top": int(watermark)},
        )
        bind.execute(
            sa.text("DELETE FROM source_cursors WHERE source = :name"), {"name": _WATERMARK}
        )
    # Event-key ids do not fit 36 characters: they go back to the UUIDs the old code
    # derives from the same key, so it finds its own moments again.
    keyed = bind.execute(
        sa.text("SELECT moment_id FROM moments WHERE moment_id = source_event")
    ).scalars()
    renames = [
        {"old": key, "new": str(uuid.uuid5(_ID_NAMESPACE, f"moment\x1f{key}"))} for key in keyed
    ]
    if renames or bind.dialect.name == "sqlite":
        _rebuild(_WIDE, _NARROW, renames)
    else:
        _alter(_WIDE, _NARROW)


def _alter(before: int, after: int) -> None:
    """Change both columns' declared length, in place (rows, ids and keys unchanged)."""
    for table in reversed(_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "moment_id",
                existing_type=sa.String(length=before),
                type_=sa.String(length=after),
                existing_nullable=False,
            )


def _rebuild(before: int, after: int, renames: list[dict[str, str]] | None = None) -> None:
    """:func:`_alter` with the rows parked in temporary tables meanwhile.

    SQLite changes a column's type by copying the table and dropping the old one, and
    dropping ``moments`` while ``asks`` rows point at it breaks the foreign key, which
    cannot be switched off inside the migration's transaction. Parked, the tables are
    empty while they change; the rows come back parents first, with ``renames``
    (old moment id -> new) applied on the way.
    """
    bind = op.get_bind()
    columns = {table: [c["name"] for c in sa.inspect(bind).get_columns(table)] for table in _TABLES}
    # Table names below are this module's constants; every value is bound.
    for table in _TABLES:
        op.execute(f"CREATE TEMPORARY TABLE _parked_{table} AS SELECT * FROM {table}")  # noqa: S608
    for table in _TABLES:
        op.execute(f"DELETE FROM {table}")  # noqa: S608
    _alter(before, after)
    op.execute("CREATE TEMPORARY TABLE _renamed_moments (old_id VARCHAR(330), new_id VARCHAR(330))")
    if renames:
        bind.execute(
            sa.text("INSERT INTO _renamed_moments (old_id, new_id) VALUES (:old, :new)"), renames
        )
    for table in reversed(_TABLES):
        names = ", ".join(columns[table])
        values = ", ".join(
            "coalesce(r.new_id, p.moment_id)" if name == "moment_id" else f"p.{name}"
            for name in columns[table]
        )
        op.execute(
            f"INSERT INTO {table} ({names}) SELECT {values} FROM _parked_{table} p"  # noqa: S608
            " LEFT JOIN _renamed_moments r ON r.old_id = p.moment_id"
        )
    for parked in (*(f"_parked_{table}" for table in _TABLES), "_renamed_moments"):
        op.execute(f"DROP TABLE {parked}")
