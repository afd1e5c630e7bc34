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
from domain.stores.asks import AskStore
from domain.stores.clawbacks import ClawbackStore, ReversalStore
from domain.stores.connect import ConnectStore
from domain.stores.discounts import DiscountStore
from domain.stores.emails import EmailStore
from domain.stores.links import LinkStore
from domain.stores.referrer_side import ReferrerSideStore


class Stores(Protocol):
    """Every area's store. Each area adds its attribute here, typed by its Protocol."""

    # -- registry and approvals (the people who release money) -----------------------
    approvers: ApproverRegistry

    # -- intake: sources, moments, history, destinations, hand-offs -------------------

    # -- messages: asks, emails, links, discounts -------------------------------------
    asks: AskStore
    emails: EmailStore
    links: LinkStore
    discounts: DiscountStore

    # -- conversions: conversions, Stripe, touchpoints, partners, webhooks, fraud ------

    # -- money: rewards, payouts, clawbacks, reconciliation ---------------------------

    # clawbacks
    clawbacks: ClawbackStore
    reversals: ReversalStore

    # -- approvals and metrics --------------------------------------------------------

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
