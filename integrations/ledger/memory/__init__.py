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

from integrations.ledger.memory.approvals import InMemoryApprovalsStore
from integrations.ledger.memory.approvers import InMemoryApproversStore
from integrations.ledger.memory.asks import InMemoryAskStore
from integrations.ledger.memory.clawbacks import clawback_stores
from integrations.ledger.memory.connect import InMemoryConnectStore
from integrations.ledger.memory.conversions import InMemoryConversionStore
from integrations.ledger.memory.destinations import InMemoryDestinationsStore
from integrations.ledger.memory.discounts import InMemoryDiscountStore
from integrations.ledger.memory.emails import InMemoryEmailStore
from integrations.ledger.memory.fraud import InMemoryFraudStore
from integrations.ledger.memory.handoffs import InMemoryHandoffsStore
from integrations.ledger.memory.history import InMemoryHistoryStore
from integrations.ledger.memory.links import InMemoryLinkStore
from integrations.ledger.memory.metrics import InMemoryMetricsStore
from integrations.ledger.memory.moments import InMemoryMomentsStore
from integrations.ledger.memory.partners import InMemoryPartnerStore
from integrations.ledger.memory.payouts import InMemoryPayoutsStore
from integrations.ledger.memory.provider_events import InMemoryProviderEventStore
from integrations.ledger.memory.reconcile import InMemoryReconcileStore
from integrations.ledger.memory.referrer_side import InMemoryReferrerSideStore
from integrations.ledger.memory.rewards import (
    InMemoryRewardRulesStore,
    InMemoryRewardsStore,
    MoneyBook,
)
from integrations.ledger.memory.shards import InMemoryShardStore
from integrations.ledger.memory.sources import InMemorySourcesStore
from integrations.ledger.memory.stripe import InMemoryStripeStore
from integrations.ledger.memory.touchpoints import InMemoryTouchpointStore


class InMemoryStores:
    """The fakes of every area that has one (an area adds its attribute here)."""

    def __init__(self) -> None:
        # -- registry and approvals ----------------------------------------------------
        self.approvers = InMemoryApproversStore()

        # -- intake ---------------------------------------------------------------------
        # The fakes share what the SQL tables share: the sources' events and contacts
        # feed detection and hand-offs, and a contact's new destination is a change.
        self.destinations = InMemoryDestinationsStore()
        self.sources = InMemorySourcesStore(self.destinations)
        self.moments = InMemoryMomentsStore(self.sources)
        self.history = InMemoryHistoryStore()
        self.handoffs = InMemoryHandoffsStore(self.sources, self.moments)

        # -- messages -------------------------------------------------------------------
        self.asks = InMemoryAskStore()
        self.emails = InMemoryEmailStore()
        self.links = InMemoryLinkStore()
        self.discounts = InMemoryDiscountStore()

        # -- conversions ----------------------------------------------------------------
        self.fraud = InMemoryFraudStore()
        self.touchpoints = InMemoryTouchpointStore()
        self.provider_events = InMemoryProviderEventStore()
        self.conversions = InMemoryConversionStore()
        self.stripe = InMemoryStripeStore()
        self.partners = InMemoryPartnerStore()

        # -- money ----------------------------------------------------------------------
        self.money = MoneyBook()  # what the rewards, reward rules and payouts fakes share
        self.rewards = InMemoryRewardsStore(self.money)
        self.reward_rules = InMemoryRewardRulesStore(self.money)
        self.payouts = InMemoryPayoutsStore(self.money)
        self.reconcile = InMemoryReconcileStore()

        # clawbacks
        self.clawbacks, self.reversals = clawback_stores()

        # -- approvals and metrics ------------------------------------------------------
        self.approvals = InMemoryApprovalsStore()
        self.metrics = InMemoryMetricsStore()

        self.committed = 0
        self.rolled_back = 0
        # referrer side (issue 15)
        self.referrer_side = InMemoryReferrerSideStore()
        self.connect = InMemoryConnectStore()
        # shards of stage runs (issue 17)
        self.shards = InMemoryShardStore()


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
