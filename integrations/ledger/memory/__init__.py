"""Recording in-memory fakes of the ledger's stores, for tests that need no SQL.

Each fake keeps plain Python lists and dicts and records the calls made to it
(``calls``), so a use case's test can assert what it asked of the ledger. They follow
the Protocols in :mod:`domain.stores`; a unit of work here commits by keeping the
changes and rolls back by restoring a copy taken when it opened.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from integrations.ledger.memory.asks import InMemoryAskStore
from integrations.ledger.memory.clawbacks import clawback_stores
from integrations.ledger.memory.discounts import InMemoryDiscountStore
from integrations.ledger.memory.emails import InMemoryEmailStore
from integrations.ledger.memory.links import InMemoryLinkStore


class InMemoryStores:
    """The fakes of every area that has one (an area adds its attribute here)."""

    def __init__(self) -> None:
        # -- registry and approvals ----------------------------------------------------

        # -- intake ---------------------------------------------------------------------

        # -- messages -------------------------------------------------------------------
        self.asks = InMemoryAskStore()
        self.emails = InMemoryEmailStore()
        self.links = InMemoryLinkStore()
        self.discounts = InMemoryDiscountStore()

        # -- conversions ----------------------------------------------------------------

        # -- money ----------------------------------------------------------------------

        # clawbacks
        self.clawbacks, self.reversals = clawback_stores()

        # -- approvals and metrics ------------------------------------------------------
        self.committed = 0
        self.rolled_back = 0


class InMemoryLedger(InMemoryStores):
    """A ledger in memory: its stores, and units of work that commit or roll back."""

    @contextmanager
    def transaction(self) -> Iterator[InMemoryLedger]:
        stores = {k: v for k, v in vars(self).items() if k not in ("committed", "rolled_back")}
        saved: dict[str, Any] = copy.deepcopy(stores)
        try:
            yield self
        except BaseException:
            for name, store in saved.items():
                setattr(self, name, store)
            self.rolled_back += 1
            raise
        self.committed += 1
