"""The Stripe payment rails, on the official ``stripe`` library.

Two rails implement :class:`domain.ports.PaymentRail`:

* :class:`StripeTransferRail` sends a Connect transfer to the referrer's connected account;
* :class:`StripeBalanceRail` credits a customer's Stripe balance (a negative balance
  transaction), which Stripe then applies to their next invoices.

Exactly-once rests on the payout's idempotency key, stored in the ledger before the
first call and sent as ``Idempotency-Key`` on every create, by us and by the library's
own retries. Stripe keeps keys for at least 24 hours; a payout whose key is older than
23 hours may outlive it, so before creating, the rail looks the payment up by its
``payout_id`` metadata (transfers through their ``transfer_group``).

Only ids ever reach Stripe's metadata: ``reward_id`` and ``payout_id``. Names and email
addresses never leave the ledger, and no error text carries the API key.

Both rails also take money back (:class:`domain.clawbacks.ReversalRail`) when a referee's
refund, chargeback or churn claws a paid reward back: a transfer reversal
(``POST /v1/transfers/{id}/reversals``), or a positive customer balance transaction (a
debit). The same exactly-once rules hold: the reversal's key
(``reward:<id>:reversal:<event id>``) is stored before the call, metadata carries the
``reward_id`` only, and past the key's life the rail looks for the reversal (same reward,
same amount, created after the key) before making one. A connected account that cannot
cover a transfer reversal answers ``INSUFFICIENT_FUNDS``: the referrer's debt stays in
the ledger and is netted from their next payout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import ClassVar, Self

import requests
import stripe

from domain.clawbacks import ReversalInstruction, ReversalOutcome, ReversalResult
from domain.models import PayoutInstruction, PayoutOutcome, PayoutRailKind, PayoutResult
from integrations.payments.throttle import (
    CREATE_BALANCE_TRANSACTION,
    CREATE_TRANSFER,
    CREATE_TRANSFER_REVERSAL,
    LIST_BALANCE_TRANSACTIONS,
    LIST_TRANSFER_REVERSALS,
    LIST_TRANSFERS,
    Throttle,
    no_throttle,
)

# Stripe prunes idempotency keys once they are at least 24 hours old. An hour of margin
# covers clock skew and a run that started just before the limit.
KEY_LOOKUP_AFTER = timedelta(hours=23)
DEFAULT_TIMEOUT_SECONDS = 30.0
_LIST_PAGE = 100
_MAX_ERROR_TEXT = 240
# Stripe's codes for "the balance cannot cover this" (connected account, platform).
_INSUFFICIENT = frozenset({"balance_insufficient", "insufficient_funds"})
# A reversal found by lookup must be younger than its key, give or take clock skew.
_LOOKUP_SLACK = timedelta(minutes=5)
_SECRET = re.compile(r"\b(?:sk|rk|pk|whsec)_[A-Za-z0-9_*]+")
_EMAIL = re.compile(r"[^\s'\"<>()]+@[^\s'\"<>()]+")


def _utc_now() -> datetime:
    return datetime.now(UTC)


def build_stripe_client(
    api_key: str,
    api_base: str | None,
    max_network_retries: int,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    session: requests.Session | None = None,
) -> stripe.StripeClient:
    """Build the Stripe client both rails use.

    With ``max_network_retries`` the library itself retries, with exponential backoff
    (0.5 s doubling, at most 5 s, jittered) and the same ``Idempotency-Key``: connection
    errors and timeouts, 409 conflicts, 5xx, and any answer carrying
    ``Stripe-Should-Retry: true`` (Stripe sets it on 429 ``lock_timeout``). It does *not*
    retry other 429s (real rate limiting) nor a 5xx answered with
    ``Stripe-Should-Retry: false`` (a failure Stripe saved under the key and would only
    replay); those come back to :meth:`PaymentRail.pay` as ``RETRYABLE``.

    Args:
        api_key: the Stripe secret key; it goes into the client and nowhere else.
        api_base: base URL override (tests point it at a local fake); ``None`` for Stripe.
        max_network_retries: retries the library makes per call.
        timeout: seconds to wait for each HTTP answer (the library's default is 80).
        session: a ``requests.Session`` shared by every thread using this client, so the
            owner can close its connections with one ``session.close()``. Without one
            the library opens a session per thread and never closes it.

    Returns:
        A configured :class:`stripe.StripeClient`.
    """
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else None,
        max_network_retries=max_network_retries,
        http_client=stripe.RequestsClient(timeout=timeout, session=session),
    )


def safe_error_text(text: str | None) -> str:
    """Shorten an error text and strip anything secret-looking or personal from it."""
    cleaned = _EMAIL.sub("[email]", _SECRET.sub("[key]", text or ""))
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > _MAX_ERROR_TEXT:
        cleaned = cleaned[: _MAX_ERROR_TEXT - 1] + "…"
    return cleaned


def classify_stripe_error(exc: stripe.StripeError) -> tuple[PayoutOutcome, str]:
    """Whether a Stripe error is worth another try with the same key, and a short text.

    ``RETRYABLE`` means the outcome is unknown or transient: the next run sends the same
    idempotency key, so Stripe either replays what it did or does it once. ``FAILED``
    means Stripe refused the request itself; retrying the same key would only replay
    the refusal.

    Args:
        exc: any error raised by the ``stripe`` library.

    Returns:
        The outcome and an error text safe to store and show (no key, no email).
    """
    status = exc.http_status
    # RateLimitError and friends leave ``exc.code`` empty; the parsed body still has it.
    code_name = exc.code or (exc.error.code if exc.error is not None else None)
    code = f" {code_name}" if code_name else ""
    message = safe_error_text(exc.user_message)
    if isinstance(exc, stripe.APIConnectionError):
        # A timeout or a dropped connection: Stripe may have acted; the key settles it.
        return PayoutOutcome.RETRYABLE, "network error talking to Stripe; outcome unknown"
    if isinstance(exc, stripe.RateLimitError):
        return PayoutOutcome.RETRYABLE, f"rate limited by Stripe ({status}{code})"
    if isinstance(exc, stripe.AuthenticationError):
        # Stripe echoes the key (masked) in this message, so none of it is kept.
        return PayoutOutcome.FAILED, "Stripe rejected the API key (authentication failed)"
    if isinstance(exc, stripe.PermissionError):
        return PayoutOutcome.FAILED, "the Stripe API key may not perform this request"
    if isinstance(exc, stripe.IdempotencyError):
        return PayoutOutcome.FAILED, f"idempotency error ({status}): {message}"
    if isinstance(exc, stripe.CardError | stripe.InvalidRequestError):
        return PayoutOutcome.FAILED, f"refused by Stripe ({status}{code}): {message}"
    if isinstance(exc, stripe.APIError):
        # 409 conflicts, 5xx and anything unexpected from Stripe's side.
        return PayoutOutcome.RETRYABLE, f"Stripe error ({status}{code}): {message}"
    # Newer error classes: unknown ground, so keep the payout open for a person to see.
    return PayoutOutcome.RETRYABLE, f"unexpected Stripe error {type(exc).__name__} ({status})"


class OwnsSession:
    """What every Stripe adapter made by its ``connect`` shares: it owns the HTTP session
    its client uses and closes it in :meth:`close` (or at the end of a ``with``)."""

    _session: requests.Session | None

    def close(self) -> None:
        """Close the HTTP connections of an adapter made by its ``connect``."""
        if self._session is not None:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _StripeRail(OwnsSession):
    """What both Stripe rails share: checks, key-expiry lookup, error mapping."""

    kind: PayoutRailKind
    _destination_prefix: ClassVar[str]
    _destination_kind: ClassVar[str]
    # The Stripe endpoint of each request, for the per-endpoint rate limit.
    _create_endpoint: ClassVar[str]
    _find_endpoint: ClassVar[str]
    _reverse_endpoint: ClassVar[str]
    _find_reversal_endpoint: ClassVar[str]

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        clock: Callable[[], datetime] = _utc_now,
        key_lookup_after: timedelta = KEY_LOOKUP_AFTER,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        """Wrap a client built by :func:`build_stripe_client`.

        Args:
            client: the Stripe client.
            clock: the current time, to tell how old an idempotency key is.
            key_lookup_after: from this key age on, look for an existing payment first.
            session: a session this rail owns and closes in :meth:`close`.
            throttle: called with the number of requests about to be made and their
                endpoint, before each Stripe request; blocks to keep every worker
                together under Stripe's rates (e.g. :class:`~integrations.prefect_limits.
                StripeRateLimits`, strict Prefect global rate limits).
        """
        self._client = client
        self._clock = clock
        self._key_lookup_after = key_lookup_after
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
        clock: Callable[[], datetime] = _utc_now,
    ) -> Self:
        """A rail with its own client and HTTP session; close it (or use ``with``)."""
        session = requests.Session()
        client = build_stripe_client(
            api_key, api_base, max_network_retries, timeout=timeout, session=session
        )
        return cls(client, clock=clock, session=session)

    def pay(self, instructions: Sequence[PayoutInstruction]) -> list[PayoutResult]:
        """Pay each instruction once; one result per instruction, in order.

        Never raises for a Stripe failure: each becomes a ``RETRYABLE`` or ``FAILED``
        result (see :func:`classify_stripe_error`).
        """
        return [self._pay_one(instruction) for instruction in instructions]

    def _pay_one(self, instruction: PayoutInstruction) -> PayoutResult:
        refusal = self._check(instruction)
        if refusal is not None:
            return PayoutResult(instruction.payout_id, PayoutOutcome.FAILED, error=refusal)
        try:
            if self._key_may_have_expired(instruction):
                self._throttle(1, endpoint=self._find_endpoint)
                existing = self._find_existing(instruction)
                if existing is not None:
                    return PayoutResult(
                        instruction.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=existing
                    )
            self._throttle(1, endpoint=self._create_endpoint)
            return PayoutResult(
                instruction.payout_id,
                PayoutOutcome.SUCCEEDED,
                provider_ref=self._create(instruction),
            )
        except stripe.IdempotencyError as exc:
            # The key was used with other parameters. If that earlier request paid this
            # payout, it is paid: a new attempt with a new key would pay it twice.
            return self._after_idempotency_error(instruction, exc)
        except stripe.StripeError as exc:
            outcome, text = classify_stripe_error(exc)
            return PayoutResult(instruction.payout_id, outcome, error=text)

    def _after_idempotency_error(
        self, instruction: PayoutInstruction, exc: stripe.IdempotencyError
    ) -> PayoutResult:
        try:
            self._throttle(1, endpoint=self._find_endpoint)
            existing = self._find_existing(instruction)
        except stripe.StripeError as lookup_exc:
            # Paid or not is unknown until a lookup works: keep the payout open.
            _, text = classify_stripe_error(lookup_exc)
            return PayoutResult(instruction.payout_id, PayoutOutcome.RETRYABLE, error=text)
        if existing is not None:
            return PayoutResult(
                instruction.payout_id, PayoutOutcome.SUCCEEDED, provider_ref=existing
            )
        outcome, text = classify_stripe_error(exc)
        return PayoutResult(instruction.payout_id, outcome, error=text)

    def _check(self, instruction: PayoutInstruction) -> str | None:
        """Why an instruction cannot go to Stripe at all, or ``None``."""
        if instruction.rail is not self.kind:
            return f"a {instruction.rail.value} payout cannot go through the {self.kind.value} rail"
        if instruction.amount.amount_minor <= 0:
            return "the amount must be positive"
        destination = instruction.destination
        if not destination:
            return f"no {self._destination_kind} to pay"
        if not destination.startswith(self._destination_prefix):
            return (
                f"destination is not a {self._destination_kind} id ({self._destination_prefix}...)"
            )
        return None

    def _key_may_have_expired(self, instruction: PayoutInstruction) -> bool:
        created = instruction.key_created_at
        if created is None:
            return False
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)  # the ledger stores UTC
        return self._clock() - created >= self._key_lookup_after

    @staticmethod
    def _metadata(instruction: PayoutInstruction) -> dict[str, str]:
        # Ids only: metadata is visible to anyone with dashboard access.
        return {"reward_id": instruction.reward_id, "payout_id": instruction.payout_id}

    @staticmethod
    def _matching(
        objects: Iterable[stripe.Transfer | stripe.CustomerBalanceTransaction],
        payout_id: str,
    ) -> str | None:
        for obj in objects:
            # StripeObject is no dict since stripe 15: no ``.get``, but ``in`` and ``[]``.
            metadata = obj.metadata
            if (
                metadata is not None
                and "payout_id" in metadata
                and metadata["payout_id"] == payout_id
            ):
                return obj.id
        return None

    def _create(self, instruction: PayoutInstruction) -> str:
        raise NotImplementedError

    def _find_existing(self, instruction: PayoutInstruction) -> str | None:
        raise NotImplementedError

    # -- reversals ---------------------------------------------------------------------

    def reverse(self, instructions: Sequence[ReversalInstruction]) -> list[ReversalResult]:
        """Take back each instruction's amount once; one result per instruction, in order.

        Never raises for a Stripe failure: each becomes ``RETRYABLE``, ``FAILED`` or, when
        the balance cannot cover it, ``INSUFFICIENT_FUNDS``.
        """
        return [self._reverse_one(instruction) for instruction in instructions]

    def _reverse_one(self, instruction: ReversalInstruction) -> ReversalResult:
        refusal = self._check_reversal(instruction)
        if refusal is not None:
            return ReversalResult(instruction.reversal_id, ReversalOutcome.FAILED, error=refusal)
        try:
            if self._reversal_key_may_have_expired(instruction):
                self._throttle(1, endpoint=self._find_reversal_endpoint)
                existing = self._find_reversal(instruction)
                if existing is not None:
                    return ReversalResult(
                        instruction.reversal_id, ReversalOutcome.SUCCEEDED, provider_ref=existing
                    )
            self._throttle(1, endpoint=self._reverse_endpoint)
            return ReversalResult(
                instruction.reversal_id,
                ReversalOutcome.SUCCEEDED,
                provider_ref=self._create_reversal(instruction),
            )
        except stripe.IdempotencyError as exc:
            return self._reversal_after_idempotency_error(instruction, exc)
        except stripe.StripeError as exc:
            return self._reversal_failure(instruction, exc)

    def _reversal_after_idempotency_error(
        self, instruction: ReversalInstruction, exc: stripe.IdempotencyError
    ) -> ReversalResult:
        try:
            self._throttle(1, endpoint=self._find_reversal_endpoint)
            existing = self._find_reversal(instruction)
        except stripe.StripeError as lookup_exc:
            _, text = classify_stripe_error(lookup_exc)
            return ReversalResult(instruction.reversal_id, ReversalOutcome.RETRYABLE, error=text)
        if existing is not None:
            return ReversalResult(
                instruction.reversal_id, ReversalOutcome.SUCCEEDED, provider_ref=existing
            )
        return self._reversal_failure(instruction, exc)

    @staticmethod
    def _reversal_failure(
        instruction: ReversalInstruction, exc: stripe.StripeError
    ) -> ReversalResult:
        outcome, text = classify_reversal_error(exc)
        return ReversalResult(instruction.reversal_id, outcome, error=text)

    def _check_reversal(self, instruction: ReversalInstruction) -> str | None:
        if instruction.rail is not self.kind:
            return (
                f"a {instruction.rail.value} payout cannot be reversed through the "
                f"{self.kind.value} rail"
            )
        if instruction.amount.amount_minor <= 0:
            return "the amount must be positive"
        return None

    def _reversal_key_may_have_expired(self, instruction: ReversalInstruction) -> bool:
        created = instruction.key_created_at
        if created is None:
            return False
        if created.tzinfo is None:
            created = created.replace(tzinfo=UTC)
        return self._clock() - created >= self._key_lookup_after

    @staticmethod
    def _reversal_metadata(instruction: ReversalInstruction) -> dict[str, str]:
        # The reward id only: it is how the reconciliation groups Stripe's objects.
        return {"reward_id": instruction.reward_id}

    @staticmethod
    def _matching_reversal(
        objects: Iterable[stripe.TransferReversal | stripe.CustomerBalanceTransaction],
        instruction: ReversalInstruction,
        amount: int,
    ) -> str | None:
        """A reversal made under an expired key: same reward, same amount, made after
        the key was stored (oldest such first)."""
        since = instruction.key_created_at
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        found: list[tuple[int, str]] = []
        for obj in objects:
            metadata = obj.metadata
            if (
                metadata is None
                or "reward_id" not in metadata
                or metadata["reward_id"] != instruction.reward_id
                or obj.amount != amount
            ):
                continue
            made = datetime.fromtimestamp(obj.created, tz=UTC)
            if since is None or made >= since - _LOOKUP_SLACK:
                found.append((obj.created, obj.id))
        return min(found)[1] if found else None

    def _create_reversal(self, instruction: ReversalInstruction) -> str:
        raise NotImplementedError

    def _find_reversal(self, instruction: ReversalInstruction) -> str | None:
        raise NotImplementedError


def classify_reversal_error(exc: stripe.StripeError) -> tuple[ReversalOutcome, str]:
    """A reversal's outcome for a Stripe error, and a short text safe to store.

    A balance that cannot cover the reversal is ``INSUFFICIENT_FUNDS`` (the debt is
    then netted; retrying would only replay the refusal); otherwise as
    :func:`classify_stripe_error`.
    """
    outcome, text = classify_stripe_error(exc)
    code = exc.code or (exc.error.code if exc.error is not None else None)
    if code in _INSUFFICIENT:
        return ReversalOutcome.INSUFFICIENT_FUNDS, text
    if outcome is PayoutOutcome.RETRYABLE:
        return ReversalOutcome.RETRYABLE, text
    return ReversalOutcome.FAILED, text


class StripeTransferRail(_StripeRail):
    """Pays a reward as a Stripe Connect transfer to the referrer's connected account.

    ``instruction.destination`` is the connected account id (``acct_...``). Each
    transfer carries ``transfer_group="reward_<reward_id>"`` and metadata
    ``reward_id``/``payout_id``, and is created with the instruction's idempotency key.
    """

    kind = PayoutRailKind.STRIPE_TRANSFER
    _destination_prefix = "acct_"
    _destination_kind = "connected account"
    _create_endpoint = CREATE_TRANSFER
    _find_endpoint = LIST_TRANSFERS
    _reverse_endpoint = CREATE_TRANSFER_REVERSAL
    _find_reversal_endpoint = LIST_TRANSFER_REVERSALS

    @staticmethod
    def transfer_group(reward_id: str) -> str:
        """The ``transfer_group`` of a reward's transfers."""
        return f"reward_{reward_id}"

    def _create(self, instruction: PayoutInstruction) -> str:
        assert instruction.destination is not None  # _check made sure
        transfer = self._client.v1.transfers.create(
            {
                "amount": instruction.amount.amount_minor,
                "currency": instruction.amount.currency.lower(),
                "destination": instruction.destination,
                "transfer_group": self.transfer_group(instruction.reward_id),
                "description": "Referral reward",
                "metadata": self._metadata(instruction),
            },
            options={"idempotency_key": instruction.idempotency_key},
        )
        return transfer.id

    def _find_existing(self, instruction: PayoutInstruction) -> str | None:
        page = self._client.v1.transfers.list(
            {"transfer_group": self.transfer_group(instruction.reward_id), "limit": _LIST_PAGE}
        )
        return self._matching(page.auto_paging_iter(), instruction.payout_id)

    def _check_reversal(self, instruction: ReversalInstruction) -> str | None:
        refusal = super()._check_reversal(instruction)
        if refusal is None and not (instruction.payout_ref or "").startswith("tr_"):
            refusal = "the payout has no transfer id (tr_...) to reverse"
        return refusal

    def _create_reversal(self, instruction: ReversalInstruction) -> str:
        assert instruction.payout_ref is not None  # _check_reversal made sure
        reversal = self._client.v1.transfers.reversals.create(
            instruction.payout_ref,
            {
                "amount": instruction.amount.amount_minor,
                "metadata": self._reversal_metadata(instruction),
            },
            options={"idempotency_key": instruction.idempotency_key},
        )
        return reversal.id

    def _find_reversal(self, instruction: ReversalInstruction) -> str | None:
        assert instruction.payout_ref is not None
        page = self._client.v1.transfers.reversals.list(
            instruction.payout_ref, {"limit": _LIST_PAGE}
        )
        return self._matching_reversal(
            page.auto_paging_iter(), instruction, instruction.amount.amount_minor
        )


class StripeBalanceRail(_StripeRail):
    """Pays a reward as a credit on the referrer's Stripe customer balance.

    ``instruction.destination`` is the customer id (``cus_...``). The balance
    transaction's amount is negative (Stripe's sign for a credit the customer can
    spend on invoices), in the reward's currency, with metadata ``reward_id``/
    ``payout_id`` and the instruction's idempotency key. A customer balance has one
    currency: a credit in another one is refused by Stripe (``FAILED``).
    """

    kind = PayoutRailKind.STRIPE_BALANCE
    _destination_prefix = "cus_"
    _destination_kind = "Stripe customer"
    # A debit that reverses a credit is one more balance transaction.
    _create_endpoint = _reverse_endpoint = CREATE_BALANCE_TRANSACTION
    _find_endpoint = _find_reversal_endpoint = LIST_BALANCE_TRANSACTIONS

    def _create(self, instruction: PayoutInstruction) -> str:
        assert instruction.destination is not None  # _check made sure
        credit = self._client.v1.customers.balance_transactions.create(
            instruction.destination,
            {
                "amount": -instruction.amount.amount_minor,
                "currency": instruction.amount.currency.lower(),
                "description": "Referral reward credit",
                "metadata": self._metadata(instruction),
            },
            options={"idempotency_key": instruction.idempotency_key},
        )
        return credit.id

    def _find_existing(self, instruction: PayoutInstruction) -> str | None:
        assert instruction.destination is not None
        page = self._client.v1.customers.balance_transactions.list(
            instruction.destination, {"limit": _LIST_PAGE}
        )
        return self._matching(page.auto_paging_iter(), instruction.payout_id)

    def _check_reversal(self, instruction: ReversalInstruction) -> str | None:
        refusal = super()._check_reversal(instruction)
        if refusal is None and not (instruction.destination or "").startswith("cus_"):
            refusal = "the payout has no Stripe customer (cus_...) to debit"
        return refusal

    def _create_reversal(self, instruction: ReversalInstruction) -> str:
        assert instruction.destination is not None  # _check_reversal made sure
        # Positive: a debit, added to what the customer's next invoice asks for.
        debit = self._client.v1.customers.balance_transactions.create(
            instruction.destination,
            {
                "amount": instruction.amount.amount_minor,
                "currency": instruction.amount.currency.lower(),
                "description": "Referral reward clawback",
                "metadata": self._reversal_metadata(instruction),
            },
            options={"idempotency_key": instruction.idempotency_key},
        )
        return debit.id

    def _find_reversal(self, instruction: ReversalInstruction) -> str | None:
        assert instruction.destination is not None
        page = self._client.v1.customers.balance_transactions.list(
            instruction.destination, {"limit": _LIST_PAGE}
        )
        return self._matching_reversal(
            page.auto_paging_iter(), instruction, instruction.amount.amount_minor
        )
