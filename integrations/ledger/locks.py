"""The per-referrer locks every money write that reads a referrer's position takes.

Accruing rewards under caps, preparing payouts (which nets debts) and applying a
payment loss all read what a referrer earned, owes or is being paid, then write: on
PostgreSQL each takes a transaction-scoped advisory lock per referrer, in one global
order (by key), so two such transactions are serialized exactly where they touch the
same referrer and never wait on each other in a cycle. SQLite needs none: its writers
are serialized by ``BEGIN IMMEDIATE``. A function on a connection, not a store's
method, so that every area's store takes the same keys in the transaction it writes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from sqlalchemy import Connection, text


def _lock_key(referrer_id: str) -> int:
    digest = hashlib.sha256(f"referrals:referrer:{referrer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_referrers(conn: Connection, referrer_ids: Iterable[str]) -> None:
    """Serialize, per referrer, the writes that read a referrer's debts and payouts.

    PostgreSQL: transaction-scoped advisory locks, taken in one global order (by key)
    so two transactions never wait on each other in a cycle. SQLite needs none: its
    writers are serialized by ``BEGIN IMMEDIATE``.
    """
    if conn.dialect.name != "postgresql":
        return
    for key in sorted({_lock_key(r) for r in referrer_ids}):
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
