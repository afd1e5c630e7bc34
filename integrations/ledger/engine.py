"""Engines for the ledger: SQLite (default) and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from domain.shards import shard_of

# Per connection, in KiB (SQLite's default is 2 MiB). Bulk writes put rows into several
# indexes keyed by ids in no particular order (event ids, UUIDs); with a small cache
# every page of those indexes is evicted and read back many times, which makes the
# ingest and the stages' inserts grow faster than their rows.
SQLITE_CACHE_KIB = 65_536


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings the ledger relies on.

    SQLite: WAL (readers never block the writer), foreign keys on, a 30 s busy wait,
    and every transaction opened with ``BEGIN IMMEDIATE`` so two processes never both
    read and then both try to upgrade to a write lock (a deadlock SQLite resolves by
    failing one of them at once).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.close()
            # The shard of a key, for queries that take one (integrations.ledger.shards).
            dbapi_conn.create_function("referrals_shard", 2, shard_of, deterministic=True)

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)
