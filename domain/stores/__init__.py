"""The ledger's ports: one small store per area, and the unit of work that binds them.

A store is named for its area (``rewards``, ``payouts``, ``approvals``...) and typed by a
Protocol in this package; the SQL adapters live in ``integrations/ledger/`` and the
recording in-memory fakes in ``integrations/ledger/memory/``.

Two ways in, as in cosmicpython's unit of work:

* ``ledger.<store>.<method>(...)``: each call is its own transaction. For a read, or
  for one write that is atomic by itself.
* ``with ledger.transaction() as uow: uow.<store>.<method>(...)``: every call made
  through ``uow`` runs in one transaction, committed when the block ends and rolled
  back if it raises. Use cases that must be atomic (a clawback, an approval decision,
  reward accrual) open one and call domain rules and store methods in it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from domain.ports import ApproverRegistry
from domain.stores.approvals import ApprovalsStore
from domain.stores.asks import AskStore
from domain.stores.clawbacks import ClawbackStore, ReversalStore
from domain.stores.connect import ConnectStore
from domain.stores.conversions import ConversionStore
from domain.stores.destinations import DestinationsStore
from domain.stores.discounts import DiscountStore
from domain.stores.emails import EmailStore
from domain.stores.fraud import FraudStore
from domain.stores.handoffs import HandoffsStore
from domain.stores.history import HistoryStore
from domain.stores.links import LinkStore
from domain.stores.metrics import MetricsStore
from domain.stores.moments import MomentsStore
from domain.stores.partners import PartnerStore
from domain.stores.payouts import PayoutsStore
from domain.stores.provider_events import ProviderEventStore
from domain.stores.reconcile import ReconcileStore
from domain.stores.referrer_side import ReferrerSideStore
from domain.stores.reward_rules import RewardRulesStore
from domain.stores.rewards import RewardsStore
from domain.stores.sources import SourcesStore
from domain.stores.stripe import StripeStore
from domain.stores.touchpoints import TouchpointStore


class Stores(Protocol):
    """Every area's store. Each area adds its attribute here, typed by its Protocol."""

    # -- registry and approvals (the people who release money) -----------------------
    approvers: ApproverRegistry

    # -- intake: sources, moments, history, destinations, hand-offs -------------------
    sources: SourcesStore
    moments: MomentsStore
    history: HistoryStore
    destinations: DestinationsStore
    handoffs: HandoffsStore

    # -- messages: asks, emails, links, discounts -------------------------------------
    asks: AskStore
    emails: EmailStore
    links: LinkStore
    discounts: DiscountStore

    # -- conversions: conversions, Stripe, touchpoints, partners, webhooks, fraud ------
    fraud: FraudStore
    touchpoints: TouchpointStore
    provider_events: ProviderEventStore
    conversions: ConversionStore
    stripe: StripeStore
    partners: PartnerStore

    # -- money: rewards, payouts, clawbacks, reconciliation ---------------------------
    rewards: RewardsStore
    reward_rules: RewardRulesStore
    payouts: PayoutsStore
    reconcile: ReconcileStore

    # clawbacks
    clawbacks: ClawbackStore
    reversals: ReversalStore

    # -- approvals and metrics --------------------------------------------------------
    # Read-only, so a store class that follows the Protocol is accepted (an attribute
    # would have to be of the Protocol type itself).
    @property
    def approvals(self) -> ApprovalsStore:
        """Approval requests and decisions."""
        ...

    @property
    def metrics(self) -> MetricsStore:
        """The program metrics' and the run summary's queries."""
        ...

    # referrer side (issue 15)
    referrer_side: ReferrerSideStore
    connect: ConnectStore


class UnitOfWork(Stores, Protocol):
    """The stores of one open transaction (see the module's docstring)."""


class Ledger(Stores, Protocol):
    """The ledger: its stores, each call its own transaction, and units of work."""

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """Open one transaction; the stores it yields all run in it."""
        ...
