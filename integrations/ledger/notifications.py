"""Queueing notifications: a write every area that tells a referrer something shares.

A module-level function taking the caller's connection, so an area queues its
notifications inside its own transaction (a reward, a clawback, a conversion and the
email telling of it commit together). The ``emails`` store sends them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from integrations.ledger.tables import T_NOTIFICATIONS


def queue_notifications(conn: Connection, rows: Sequence[Mapping[str, Any]], now: datetime) -> int:
    """Queue notification rows (``notification_id``, ``contact_id``, ``kind``, ``data``);
    one already queued under its id is left as it is. Returns how many were new."""
    if not rows:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = (
        insert(T_NOTIFICATIONS)
        .on_conflict_do_nothing()
        .returning(T_NOTIFICATIONS.c.notification_id)
    )
    # In id order, as asks are (``SqlAskStore.queue_asks``): notifications are sent by
    # id a page at a time and updated twice each; rows inserted side by side in that
    # order put a page's notifications on fewer table pages to rewrite.
    queued = [
        {**r, "status": "queued", "created_at": now}
        for r in sorted(rows, key=lambda r: str(r["notification_id"]))
    ]
    return len(conn.execute(stmt, queued).scalars().all())
