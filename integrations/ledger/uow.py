"""The unit of work on SQLAlchemy: every area's store, bound to one connection or not.

:class:`SqlStores` builds each store of :class:`domain.stores.Stores` over an engine.
Unbound (``conn=None``), each store method opens its own transaction; bound, every
method runs on ``conn`` inside the transaction :meth:`SqlLedger.transaction` opened,
which commits when the ``with`` block ends and rolls back when it raises.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from integrations.ledger.approvals import SqlApprovalsStore
from integrations.ledger.approvers import SqlApprovers
from integrations.ledger.asks import SqlAskStore
from integrations.ledger.clawbacks import SqlClawbackStore, SqlReversalStore
from integrations.ledger.connect import SqlConnectStore
from integrations.ledger.conversions import SqlConversionStore
from integrations.ledger.destinations import SqlDestinationsStore
from integrations.ledger.detection import SqlMomentsStore
from integrations.ledger.discounts import SqlDiscountStore
from integrations.ledger.emails import SqlEmailStore
from integrations.ledger.fraud import SqlFraudStore
from integrations.ledger.handoffs import SqlHandoffsStore
from integrations.ledger.history import SqlHistoryStore
from integrations.ledger.links import SqlLinkStore
from integrations.ledger.metrics import SqlMetricsStore
from integrations.ledger.partners import SqlPartnerStore
from integrations.ledger.payouts import SqlPayoutsStore
from integrations.ledger.provider_events import SqlProviderEventStore
from integrations.ledger.reconcile import SqlReconcileStore
from integrations.ledger.referrer_side import SqlReferrerSide
from integrations.ledger.reward_rules import SqlRewardRulesStore
from integrations.ledger.rewards import SqlRewardsStore
from integrations.ledger.shards import SqlShardStore
from integrations.ledger.sources import SqlSourcesStore
from integrations.ledger.stripe_conversions import SqlStripeStore
from integrations.ledger.touchpoints import SqlTouchpointStore


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
        self.asks = SqlAskStore(engine, conn)
        self.emails = SqlEmailStore(engine, conn)
        self.links = SqlLinkStore(engine, conn)
        self.discounts = SqlDiscountStore(engine, conn)

        # -- conversions ----------------------------------------------------------------
        self.fraud = SqlFraudStore(engine, conn)
        self.touchpoints = SqlTouchpointStore(engine, conn)
        self.provider_events = SqlProviderEventStore(engine, conn)
        self.conversions = SqlConversionStore(engine, conn)
        self.stripe = SqlStripeStore(engine, conn)
        self.partners = SqlPartnerStore(engine, conn)

        # -- money ----------------------------------------------------------------------
        self.rewards = SqlRewardsStore(engine, conn)
        self.reward_rules = SqlRewardRulesStore(engine, conn)
        self.payouts = SqlPayoutsStore(engine, conn)
        self.reconcile = SqlReconcileStore(engine, conn)

        # clawbacks
        self.clawbacks = SqlClawbackStore(engine, conn)
        self.reversals = SqlReversalStore(engine, conn)

        # -- approvals and metrics ------------------------------------------------------
        self.approvals = SqlApprovalsStore(engine, conn)
        self.metrics = SqlMetricsStore(engine, conn)

        # referrer side (issue 15)
        self.referrer_side = SqlReferrerSide(engine, conn)
        self.connect = SqlConnectStore(engine, conn)

        # shards of stage runs (issue 17)
        self.shards = SqlShardStore(engine, conn)
