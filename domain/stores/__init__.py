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
from domain.stores.shards import ShardStore
from domain.stores.sources import SourcesStore
from domain.stores.stripe import StripeStore
from domain.stores.touchpoints import TouchpointStore


class Stores(Protocol):
    """Every area's store, typed by its Protocol.

    Read-only properties, so an adapter whose store classes follow the Protocols (the
    SQL stores, the in-memory fakes) is accepted: a plain attribute would have to be
    of the Protocol type itself.
    """

    # -- registry and approvals (the people who release money) -----------------------
    @property
    def approvers(self) -> ApproverRegistry:
        """The approvers: who may release money, their codes and refusals."""
        ...

    # -- intake: sources, moments, history, destinations, hand-offs -------------------
    @property
    def sources(self) -> SourcesStore:
        """What the sources delivered: reference rows, events, cursors, quarantine."""
        ...

    @property
    def moments(self) -> MomentsStore:
        """Referral moments detected from the events."""
        ...

    @property
    def history(self) -> HistoryStore:
        """A conversion's history, for attribution."""
        ...

    @property
    def destinations(self) -> DestinationsStore:
        """Payout destination changes of contacts."""
        ...

    @property
    def handoffs(self) -> HandoffsStore:
        """Detractors handed on to a person."""
        ...

    # -- messages: asks, emails, links, discounts -------------------------------------
    @property
    def asks(self) -> AskStore:
        """Who to ask, their codes, and the asks queued."""
        ...

    @property
    def emails(self) -> EmailStore:
        """The outbox, the notifications and the suppression list."""
        ...

    @property
    def links(self) -> LinkStore:
        """Tracked links and their clicks."""
        ...

    @property
    def discounts(self) -> DiscountStore:
        """Referees' discounts at the provider."""
        ...

    # -- conversions: conversions, Stripe, touchpoints, partners, webhooks, fraud ------
    @property
    def fraud(self) -> FraudStore:
        """Card fingerprints and the fraud history."""
        ...

    @property
    def touchpoints(self) -> TouchpointStore:
        """Touchpoints of referees, for attribution."""
        ...

    @property
    def provider_events(self) -> ProviderEventStore:
        """Providers' events, each applied once."""
        ...

    @property
    def conversions(self) -> ConversionStore:
        """Conversions and their placement."""
        ...

    @property
    def stripe(self) -> StripeStore:
        """Conversions read from Stripe."""
        ...

    @property
    def partners(self) -> PartnerStore:
        """Partner registrations."""
        ...

    # -- money: rewards, payouts, clawbacks, reconciliation ---------------------------
    @property
    def rewards(self) -> RewardsStore:
        """Rewards and their routing."""
        ...

    @property
    def reward_rules(self) -> RewardRulesStore:
        """The facts reward rules accrue from."""
        ...

    @property
    def payouts(self) -> PayoutsStore:
        """Payouts: prepared, claimed, settled exactly once."""
        ...

    @property
    def reconcile(self) -> ReconcileStore:
        """The ledger's side of the reconciliation."""
        ...

    # clawbacks
    @property
    def clawbacks(self) -> ClawbackStore:
        """Clawbacks of rewards whose payment was lost."""
        ...

    @property
    def reversals(self) -> ReversalStore:
        """Reversals of paid money at the provider, and debts."""
        ...

    # -- approvals and metrics --------------------------------------------------------
    @property
    def approvals(self) -> ApprovalsStore:
        """Approval requests and decisions."""
        ...

    @property
    def metrics(self) -> MetricsStore:
        """The program metrics' and the run summary's queries."""
        ...

    # referrer side (issue 15)
    @property
    def referrer_side(self) -> ReferrerSideStore:
        """The referrer's own page: their facts, choices and link requests."""
        ...

    @property
    def connect(self) -> ConnectStore:
        """Referrers' Stripe Connect accounts and their onboarding."""
        ...

    # shards of stage runs (issue 17)
    @property
    def shards(self) -> ShardStore:
        """Shards of stage runs: claimed with a lease, done once."""
        ...


class UnitOfWork(Stores, Protocol):
    """The stores of one open transaction (see the module's docstring)."""


class Ledger(Stores, Protocol):
    """The ledger: its stores, each call its own transaction, and units of work."""

    def transaction(self) -> AbstractContextManager[UnitOfWork]:
        """Open one transaction; the stores it yields all run in it."""
        ...
