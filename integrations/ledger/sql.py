"""The ledger on SQLAlchemy: a factory of area stores over one engine.

Each store of :class:`domain.stores.Stores` is an attribute (``ledger.rewards``,
``ledger.payouts``, ``ledger.approvals``...), each call its own transaction; and
:meth:`SqlLedger.transaction` yields the same stores bound to one transaction, for the
use cases (``tasks/use_cases/``) whose writes must land together.

Writes are idempotent: inserts ignore rows that already exist (the unique constraints
in :mod:`integrations.ledger.tables` decide what "already" means), and status changes
are conditional (``... WHERE status IN (expected)``) so two runs racing on the same row
cannot both move it. Money only ever enters through ``ledger_entries`` inserts, and the
database's triggers refuse what would rewrite it (see the migrations).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine

from integrations.ledger.uow import SqlStores


class SqlLedger(SqlStores):
    """The ledger database behind SQLAlchemy (SQLite or PostgreSQL): its stores.

    Args:
        engine: the ledger's engine, migrated to the head revision.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.engine = engine

    @contextmanager
    def transaction(self) -> Iterator[SqlStores]:
        """One unit of work: the stores it yields share one transaction, committed when
        the block ends, rolled back when it raises."""
        with self.engine.begin() as conn:
            yield SqlStores(self.engine, conn)
