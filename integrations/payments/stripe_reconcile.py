"""Reading Stripe back: the payment losses in its events, the money it moved for rewards.

Two things live here, both translations from Stripe's shapes into the domain's:

* :func:`parse_payment_loss` reads a stored Stripe event (``charge.refunded``,
  ``charge.dispute.created``, ``customer.subscription.deleted``) into a
  :class:`domain.clawbacks.PaymentLoss`: the payment ids it names (charge, payment
  intent, invoice, subscription), the customer, and how much was lost. A refund's
  ``amount_refunded`` is cumulative, which is what lets a second partial refund take
  back only its own part.
* :class:`StripeRecords` implements :class:`domain.clawbacks.PaymentRecords`: it pages
  through every transfer (with its reversals) and the balance transactions of the given
  customers, keeping those whose metadata carries a ``reward_id``, for the
  reconciliation to compare with the ledger. It also implements
  :class:`domain.ports.PaymentCards`: the fingerprint of the card behind a charge or a
  payment intent, for the same-card fraud check when an event names its charge by id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self

import requests
import stripe

from domain.clawbacks import ClawbackCause, Movement, MovementKind, PaymentLoss
from domain.errors import InputRejected, PermanentIntegrationError, RetryableIntegrationError
from domain.models import PayoutOutcome
from domain.money import Money
from integrations.payments.stripe_payloads import card_fingerprint
from integrations.payments.stripe_rail import (
    DEFAULT_TIMEOUT_SECONDS,
    OwnsSession,
    build_stripe_client,
    classify_stripe_error,
)
from integrations.payments.throttle import (
    LIST_BALANCE_TRANSACTIONS,
    LIST_TRANSFER_REVERSALS,
    LIST_TRANSFERS,
    RETRIEVE_CHARGE,
    RETRIEVE_PAYMENT_INTENT,
    Throttle,
    no_throttle,
)

REFUNDED = "charge.refunded"
DISPUTED = "charge.dispute.created"
CHURNED = "customer.subscription.deleted"
LOSS_EVENT_TYPES: dict[str, ClawbackCause] = {
    REFUNDED: ClawbackCause.REFUND,
    DISPUTED: ClawbackCause.CHARGEBACK,
    CHURNED: ClawbackCause.CHURN,
}
_PAGE = 100
_RECORD = "stripe"


class _NoCardDetails(logging.Filter):
    """Drops the ``stripe`` library's debug record of a response body that carries a
    payment's card details (brand, last digits, expiry): reading a charge for its
    fingerprint must not write the rest of the card into a log at DEBUG level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "payment_method_details" not in record.getMessage()


_STRIPE_LOGGER = logging.getLogger("stripe")  # where the library logs requests and bodies
if not any(isinstance(f, _NoCardDetails) for f in _STRIPE_LOGGER.filters):
    _STRIPE_LOGGER.addFilter(_NoCardDetails())


def _refuse(event_id: str, field: str, reason: str) -> InputRejected:
    return InputRejected(f"{_RECORD}:{event_id}", field, reason)


def _id_of(value: Any) -> str | None:
    """An id field that may be expanded into its object: ``"ch_1"`` or ``{"id": ...}``."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None


def _amount(obj: Mapping[str, Any], name: str, event_id: str) -> int:
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _refuse(event_id, f"data.object.{name}", "must be a non-negative integer")
    return value


def _time(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def parse_payment_loss(
    event_id: str, type_: str, created_at: datetime, payload: Mapping[str, Any]
) -> PaymentLoss:
    """What a stored Stripe event says the referee took back.

    Args:
        event_id: the event id (``evt_...``).
        type_: one of :data:`LOSS_EVENT_TYPES`.
        created_at: the event's ``created`` (aware UTC), the default time of the loss.
        payload: the event as received.

    Returns:
        The loss: refund (cumulative ``amount_refunded`` of the charge, with the
        charge's amount), chargeback (the dispute's amount) or churn (the ended
        subscription and its customer).

    Raises:
        InputRejected: the type is not one of these, or a field the loss needs is
            missing or malformed (the event is quarantined, never guessed at).
    """
    cause = LOSS_EVENT_TYPES.get(type_)
    if cause is None:
        raise _refuse(event_id, "type", f"{type_!r} is not a refund, dispute or churn event")
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        raise _refuse(event_id, "data.object", "event has no object")
    object_id = _id_of(obj.get("id"))
    if object_id is None:
        raise _refuse(event_id, "data.object.id", "object has no id")
    if cause is ClawbackCause.REFUND:
        refs = (object_id, _id_of(obj.get("payment_intent")), _id_of(obj.get("invoice")))
        return PaymentLoss(
            event_id=event_id,
            cause=cause,
            occurred_at=created_at,
            payment_refs=tuple(r for r in refs if r),
            customer_ref=_id_of(obj.get("customer")),
            payment_key=object_id,
            payment_minor=_amount(obj, "amount", event_id),
            lost_minor=_amount(obj, "amount_refunded", event_id),
        )
    if cause is ClawbackCause.CHARGEBACK:
        charge = _id_of(obj.get("charge"))
        intent = _id_of(obj.get("payment_intent"))
        if charge is None and intent is None:
            raise _refuse(event_id, "data.object.charge", "dispute names no charge")
        return PaymentLoss(
            event_id=event_id,
            cause=cause,
            occurred_at=_time(obj.get("created")) or created_at,
            payment_refs=tuple(r for r in (charge, intent) if r),
            customer_ref=None,
            payment_key=charge or intent or object_id,
            payment_minor=None,
            lost_minor=_amount(obj, "amount", event_id),
        )
    customer = _id_of(obj.get("customer"))
    if customer is None:
        raise _refuse(event_id, "data.object.customer", "subscription names no customer")
    return PaymentLoss(
        event_id=event_id,
        cause=cause,
        occurred_at=_time(obj.get("ended_at")) or _time(obj.get("canceled_at")) or created_at,
        payment_refs=tuple(r for r in (object_id, _id_of(obj.get("latest_invoice"))) if r),
        customer_ref=customer,
        payment_key=object_id,
        payment_minor=None,
        lost_minor=0,
    )


def _metadata_value(obj: Any, name: str) -> str | None:
    # StripeObject is no dict since stripe 15: no ``.get``, but ``in`` and ``[]``.
    metadata = getattr(obj, "metadata", None)
    if metadata is None or name not in metadata:
        return None
    value = metadata[name]
    return value if isinstance(value, str) and value else None


def _money(amount: int, currency: str) -> Money:
    return Money(abs(int(amount)), currency.upper())


class StripeRecords(OwnsSession):
    """The money Stripe moved for rewards: a :class:`domain.clawbacks.PaymentRecords`.

    Transfers are listed whole (``GET /v1/transfers``, 100 a page) with their
    reversals (the first ten come with the transfer; more are paged through
    ``GET /v1/transfers/{id}/reversals``); balance transactions are listed per customer.
    Only objects whose metadata carries a ``reward_id`` count; a reversal made by hand
    without one counts for its transfer's reward.
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        """Wrap a client built by :func:`~integrations.payments.stripe_rail.build_stripe_client`.

        Args:
            client: the Stripe client.
            session: a session this reader owns and closes in :meth:`close`.
            throttle: called with the number of requests about to be made (a shared
                rate limit, as the rails use).
        """
        self._client = client
        self._session = session
        self._throttle: Throttle = throttle or no_throttle

    @classmethod
    def connect(
        cls,
        api_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 3,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Self:
        """A reader with its own client and HTTP session; close it (or use ``with``)."""
        session = requests.Session()
        client = build_stripe_client(
            api_key, api_base, max_network_retries, timeout=timeout, session=session
        )
        return cls(client, session=session)

    def movements(self, customer_ids: Sequence[str]) -> list[Movement]:
        """Every transfer, transfer reversal and customer balance transaction for a reward.

        Raises:
            RetryableIntegrationError: Stripe could not be read now (network, 429, 5xx).
            PermanentIntegrationError: Stripe refused the requests (key, permissions).
        """
        try:
            found = list(self._transfers())
            for customer in sorted(set(customer_ids)):
                found += self._balance_transactions(customer)
        except stripe.StripeError as exc:
            outcome, text = classify_stripe_error(exc)
            if outcome is PayoutOutcome.RETRYABLE:
                raise RetryableIntegrationError(f"reading Stripe: {text}") from None
            raise PermanentIntegrationError(f"reading Stripe: {text}") from None
        return found

    def card_fingerprint(self, payment_ref: str) -> str | None:
        """The fingerprint of the card that paid ``payment_ref``: a
        :class:`domain.ports.PaymentCards`, in one throttled request.

        A charge (``ch_``, ``py_``) is read with ``GET /v1/charges/{id}``; a payment
        intent (``pi_``) with ``GET /v1/payment_intents/{id}``, its latest charge
        expanded. Only the fingerprint leaves this method: the card's brand, last
        digits and expiry in the same answer are neither kept nor logged. The client's
        own retries apply (network errors, 409, 5xx, ``Stripe-Should-Retry``).

        Returns:
            The fingerprint; ``None`` for another payment method (a bank debit), a
            payment intent not charged yet, an id that names no charge or payment
            intent, or one Stripe does not know (``resource_missing``).

        Raises:
            RetryableIntegrationError: Stripe could not be read now (network, 429, 5xx).
            PermanentIntegrationError: Stripe refused the request (key, permissions).
        """
        if not payment_ref.startswith(("ch_", "py_", "pi_")):
            return None
        intent_ref = payment_ref.startswith("pi_")
        self._throttle(1, endpoint=RETRIEVE_PAYMENT_INTENT if intent_ref else RETRIEVE_CHARGE)
        try:
            if intent_ref:
                intent = self._client.v1.payment_intents.retrieve(
                    payment_ref, {"expand": ["latest_charge"]}
                )
                charge = intent.to_dict().get("latest_charge")
            else:
                charge = self._client.v1.charges.retrieve(payment_ref).to_dict()
        except stripe.StripeError as exc:
            if isinstance(exc, stripe.InvalidRequestError) and exc.code == "resource_missing":
                return None  # not a payment of this account (or of this mode)
            outcome, text = classify_stripe_error(exc)
            error = f"reading Stripe payment {payment_ref}: {text}"
            if outcome is PayoutOutcome.RETRYABLE:
                raise RetryableIntegrationError(error) from None
            raise PermanentIntegrationError(error) from None
        # An intent not charged yet names no charge; one not expanded is only its id.
        return card_fingerprint(charge) if isinstance(charge, Mapping) else None

    def _pages(self, first: Any, endpoint: str) -> Iterable[Any]:
        """Every object of a list, one request to ``endpoint`` throttled per page."""
        page = first
        while True:
            yield from page.data
            if not page.has_more or not page.data:
                return
            self._throttle(1, endpoint=endpoint)
            page = page.next_page()

    def _transfers(self) -> Iterable[Movement]:
        self._throttle(1, endpoint=LIST_TRANSFERS)
        for transfer in self._pages(
            self._client.v1.transfers.list({"limit": _PAGE}), LIST_TRANSFERS
        ):
            reward_id = _metadata_value(transfer, "reward_id")
            if reward_id is not None:
                yield Movement(
                    MovementKind.PAYOUT,
                    reward_id,
                    transfer.id,
                    _money(transfer.amount, transfer.currency),
                )
            if not transfer.amount_reversed:
                continue
            for reversal in self._reversals(transfer):
                owner = _metadata_value(reversal, "reward_id") or reward_id
                if owner is not None:
                    yield Movement(
                        MovementKind.REVERSAL,
                        owner,
                        reversal.id,
                        _money(reversal.amount, reversal.currency),
                    )

    def _reversals(self, transfer: Any) -> Iterable[Any]:
        embedded = transfer.reversals
        if embedded is not None and not embedded.has_more:
            return list(embedded.data)
        self._throttle(1, endpoint=LIST_TRANSFER_REVERSALS)
        return list(
            self._pages(
                self._client.v1.transfers.reversals.list(transfer.id, {"limit": _PAGE}),
                LIST_TRANSFER_REVERSALS,
            )
        )

    def _balance_transactions(self, customer: str) -> list[Movement]:
        self._throttle(1, endpoint=LIST_BALANCE_TRANSACTIONS)
        listed = self._client.v1.customers.balance_transactions.list(customer, {"limit": _PAGE})
        found: list[Movement] = []
        for txn in self._pages(listed, LIST_BALANCE_TRANSACTIONS):
            reward_id = _metadata_value(txn, "reward_id")
            if reward_id is None or not txn.amount:
                continue
            # Negative: a credit the customer spends (our payout); positive: a debit
            # (our reversal of one).
            kind = MovementKind.PAYOUT if txn.amount < 0 else MovementKind.REVERSAL
            found.append(Movement(kind, reward_id, txn.id, _money(txn.amount, txn.currency)))
        return found
