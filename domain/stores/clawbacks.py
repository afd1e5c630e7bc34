"""The ports of the clawback area: the ``clawbacks`` store (losses and what they take
back) and the ``reversals`` store (taking paid money back at the provider, and debts).

Small reads and writes only: which rewards a loss reaches, whether in the window, and
how much it takes are the rules of :mod:`domain.clawbacks`, called by the use case
``tasks.use_cases.clawbacks.apply_payment_loss`` inside one unit of work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from domain.clawbacks import (
    Clawback,
    ClawbackNotice,
    ConversionPayment,
    PaidPayout,
    PaymentLoss,
    ReversalInstruction,
    ReversalResult,
    RewardPayment,
    RewardPosition,
)
from domain.models import RewardStatus
from domain.money import Money


class InboxEvent(Protocol):
    """A provider event waiting in the ledger's inbox."""

    @property
    def event_id(self) -> str: ...

    @property
    def type(self) -> str: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def payload(self) -> Mapping[str, Any]: ...


class ClawbackStore(Protocol):
    """Refunds, chargebacks and churn, and what they take back from rewards."""

    # -- the inbox --------------------------------------------------------------------

    def events(
        self, types: Sequence[str], after: tuple[datetime, str] | None, limit: int
    ) -> Sequence[InboxEvent]:
        """Unprocessed provider events of ``types``, oldest ``created`` first.

        Args:
            types: the event types wanted.
            after: (created, event id) of the last event already seen in this pass, so
                events left unprocessed (payment not known yet) never block the queue.
            limit: at most this many.
        """
        ...

    def lock_event(self, event_id: str) -> bool:
        """Lock the event's inbox row until the unit of work ends (a racing run waits);
        outside a unit of work the lock ends with the call.

        Returns:
            Whether the event is still to be processed (False: processed already).
        """
        ...

    def close_events(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark events processed (applied, ignored, malformed or given up on).

        Returns:
            How many were not processed already.
        """
        ...

    # -- the facts a loss is decided on ------------------------------------------------

    def conversion_payments(self, loss: PaymentLoss) -> list[ConversionPayment]:
        """The stored first payments of conversions that ``loss`` names: by its payment
        ids, and for churn by its customer too."""
        ...

    def own_payments(self, payment_refs: Sequence[str]) -> dict[str, RewardPayment]:
        """Reward id -> its own payment, for the rewards a payment in ``payment_refs``
        earned by itself (a recurring rule's invoice)."""
        ...

    def rewards_of(self, conversion_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Reward id -> (referrer id, conversion id), for the conversions' rewards."""
        ...

    def earned_alone(self, reward_ids: Sequence[str]) -> set[str]:
        """Those of ``reward_ids`` that a payment of their own earned."""
        ...

    def lock_referrers(self, referrer_ids: Iterable[str]) -> None:
        """Serialize, per referrer, the writes that read their debts and payouts (a
        clawback, a payout netting debts) until the unit of work ends (outside one, the
        lock ends with the call)."""
        ...

    def payout_pending(self, reward_ids: Sequence[str]) -> bool:
        """Whether any of the rewards has a payout under way."""
        ...

    def positions(self, reward_ids: Sequence[str], payment_key: str) -> dict[str, RewardPosition]:
        """Each reward's position: status, balance, what was settled and clawed back,
        and what the payment ``payment_key`` already took."""
        ...

    # -- what a loss writes ------------------------------------------------------------

    def book(self, clawback: Clawback, now: datetime) -> bool:
        """Record a clawback and its ``cancelled`` and ``clawed_back`` entries.

        Returns:
            False when it was recorded before (nothing is written again).
        """
        ...

    def cancel_reward(self, reward_id: str, status: RewardStatus, now: datetime) -> bool:
        """Move a reward from ``status`` to cancelled; False if its status changed."""
        ...

    def notify(self, notice: ClawbackNotice, now: datetime) -> None:
        """Queue the referrer's notification (once per notification id)."""
        ...

    # -- reading -------------------------------------------------------------------------

    def of_rewards(self, reward_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The clawback rows of rewards, oldest first (ids, causes and amounts)."""
        ...


class ReversalStore(Protocol):
    """Taking paid money back at the provider, and the debts it leaves."""

    def payout_of(self, reward_id: str) -> PaidPayout | None:
        """The payout that paid the reward, with the reversals already against it."""
        ...

    def queue(self, instruction: ReversalInstruction, clawback_id: str, now: datetime) -> int:
        """Store a reversal with its idempotency key, before the provider is called.

        Returns:
            1 when stored, 0 when it was stored before.
        """
        ...

    def pending(self, limit: int | None = None) -> list[ReversalInstruction]:
        """Reversals stored but not settled: new ones and those a crash left behind."""
        ...

    def record_results(self, results: Sequence[ReversalResult], now: datetime) -> dict[str, int]:
        """Settle reversals: a success books ``reversed`` (+amount recovered).

        Conditional on the reversal still being pending, so settling twice books
        nothing twice. Insufficient funds (``unrecovered``) and refusals (``failed``)
        leave the debt on the reward, to be netted from the referrer's next payout.

        Returns:
            How many reversals became succeeded, unrecovered or failed, and how many
            stay pending to be sent again (``retry_later``).
        """
        ...

    def debts(self, referrer_ids: Iterable[str]) -> dict[str, Money]:
        """What each referrer owes and will have netted from their next payout."""
        ...


class ClawbackStores(Protocol):
    """The stores a clawback's unit of work uses (read-only: any ``Stores`` is one)."""

    @property
    def clawbacks(self) -> ClawbackStore: ...

    @property
    def reversals(self) -> ReversalStore: ...


class LedgerWithClawbacks(Protocol):
    """What the clawback use case needs of the ledger: a unit of work with its stores.

    Narrower than :class:`domain.stores.Ledger`, so the in-memory ledger, which fakes
    only some areas, is one too.
    """

    def transaction(self) -> AbstractContextManager[ClawbackStores]:
        """Open one transaction; the stores it yields all run in it."""
        ...
