"""The unit of work on SQLAlchemy: every area's store, bound to one connection or not.

:class:`SqlStores` builds each store of :class:`domain.stores.Stores` over an engine.
Unbound (``conn=None``), each store method opens its own transaction; bound, every
method runs on ``conn`` inside the transaction :meth:`SqlLedger.transaction` opened,
which commits when the ``with`` block ends and rolls back when it raises.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from integrations.ledger.approvers import SqlApprovers
from integrations.ledger.clawbacks import SqlClawbackStore, SqlReversalStore
from integrations.ledger.connect import SqlConnectStore
from integrations.ledger.destinations import SqlDestinationsStore
from integrations.ledger.detection import SqlMomentsStore
from integrations.ledger.handoffs import SqlHandoffsStore
from integrations.ledger.history import SqlHistoryStore
from integrations.ledger.payouts import SqlPayoutsStore
from integrations.ledger.reconcile import SqlReconcileStore
from integrations.ledger.referrer_side import SqlReferrerSide
from integrations.ledger.reward_rules import SqlRewardRulesStore
from integrations.ledger.rewards import SqlRewardsStore
from integrations.ledger.sources import SqlSourcesStore


class SqlStores:
    """The stores of :class:`domain.stores.Stores` over one engine (and connection)."""

    def __init__(self, engine: Engine, conn: Connection | None = None) -> None:
        # -- registry and approvals ----------------------------------------------------
        self.approvers = SqlApprovers(engine, conn)

        # -- intake ---------------------------------------------------------------------
        self.sources = SqlSourcesStore(engine, conn)
        self.moments = SqlMomentsStore(engine, conn)
        self.history = SqlHistoryStore(engine, conn)
        self.destinations = SqlDestinationsStore(engine, conn)
        self.handoffs = SqlHandoffsStore(engine, conn)

        # -- messages -------------------------------------------------------------------

        # -- conversions ----------------------------------------------------------------

        # -- money ----------------------------------------------------------------------
        self.rewards = SqlRewardsStore(engine, conn)
        self.reward_rules = SqlRewardRulesStore(engine, conn)
        self.payouts = SqlPayoutsStore(engine, conn)
        self.reconcile = SqlReconcileStore(engine, conn)

        # clawbacks
        self.clawbacks = SqlClawbackStore(engine, conn)
        self.reversals = SqlReversalStore(engine, conn)

        # -- approvals and metrics ------------------------------------------------------

        # referrer side (issue 15)
        self.referrer_side = SqlReferrerSide(engine, conn)
        self.connect = SqlConnectStore(engine, conn)
