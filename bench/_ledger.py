"""A fresh, migrated SQLite ledger in a temporary directory, removed afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine

from integrations.ledger.engine import make_engine
from integrations.ledger.migrate import upgrade

DATABASE = "ledger.db"


@contextmanager
def fresh_ledger(prefix: str) -> Iterator[tuple[Engine, Path]]:
    """(engine, directory) of a new ledger migrated with ``upgrade``; both go at exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / DATABASE}")
        try:
            upgrade(engine)
            yield engine, Path(tmp)
        finally:
            engine.dispose()


def checkpoint(engine: Engine) -> None:
    """Fold the WAL into the database file, so a timed phase does not pay for earlier
    writes. Runs on a raw connection: the engine opens every transaction with ``BEGIN
    IMMEDIATE``, and SQLite cannot checkpoint inside a transaction."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()


def size_mb(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.iterdir()) / 1e6
