"""The unit of work on SQLAlchemy: every area's store, bound to one connection or not.

:class:`SqlStores` builds each store of :class:`domain.stores.Stores` over an engine.
Unbound (``conn=None``), each store method opens its own transaction; bound, every
method runs on ``conn`` inside the transaction :meth:`SqlLedger.transaction` opened,
which commits when the ``with`` block ends and rolls back when it raises.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from integrations.ledger.approvers import SqlApprovers
from integrations.ledger.asks import SqlAskStore
from integrations.ledger.clawbacks import SqlClawbackStore, SqlReversalStore
from integrations.ledger.connect import SqlConnectStore
from integrations.ledger.discounts import SqlDiscountStore
from integrations.ledger.emails import SqlEmailStore
from integrations.ledger.links import SqlLinkStore
from integrations.ledger.referrer_side import SqlReferrerSide


class SqlStores:
    """The stores of :class:`domain.stores.Stores` over one engine (and connection)."""

    def __init__(self, engine: Engine, conn: Connection | None = None) -> None:
        # -- registry and approvals ----------------------------------------------------
        self.approvers = SqlApprovers(engine, conn)

        # -- intake ---------------------------------------------------------------------

        # -- messages -------------------------------------------------------------------
        self.asks = SqlAskStore(engine, conn)
        self.emails = SqlEmailStore(engine, conn)
        self.links = SqlLinkStore(engine, conn)
        self.discounts = SqlDiscountStore(engine, conn)

        # -- conversions ----------------------------------------------------------------

        # -- money ----------------------------------------------------------------------

        # clawbacks
        self.clawbacks = SqlClawbackStore(engine, conn)
        self.reversals = SqlReversalStore(engine, conn)

        # -- approvals and metrics ------------------------------------------------------

        # referrer side (issue 15)
        self.referrer_side = SqlReferrerSide(engine, conn)
        self.connect = SqlConnectStore(engine, conn)
