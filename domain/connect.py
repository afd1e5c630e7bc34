"""Getting paid: onboarding a referrer with no payable rail to a Stripe Connect
Express account, and making that account their payout destination once it can
receive transfers.

The rules, pure (the ports do the I/O):

* One connected account per referrer, ever. The idempotency key that creates it is
  derived from the referrer id and stored in the ledger *before* the provider is
  called: a crash between the call and the commit of the account id leaves the key
  stored, and the retry sends it again, so the provider answers with the account it
  already made instead of making a second one.
* An Account Link is single-use and short-lived: a fresh one per visit, never stored.
* Returning from the hosted page proves nothing (Stripe sends the referrer back
  whether they finished or not): the account is read back from the provider and its
  state recorded. It can receive transfers when the ``transfers`` capability is active
  and payouts are enabled.
* Only then does the account become the referrer's payout destination, recorded as a
  payout destination change (source :data:`DESTINATION_SOURCE`), which raises the
  ``payout_destination_changed`` fraud flag as any other change does: the referrer
  proved they could open a magic link sent to their address, not who they are.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domain.ports import ConnectOnboarding
    from domain.stores.connect import ConnectStore

#: The ``source`` of the payout destination change an onboarding records.
DESTINATION_SOURCE = "connect-onboarding"
#: The Stripe event that tells a connected account's state changed.
ACCOUNT_UPDATED = "account.updated"


def account_key(referrer_id: str) -> str:
    """The idempotency key that creates ``referrer_id``'s connected account: one per
    referrer, so every retry of the creation names the same account."""
    return f"referrer:{referrer_id}:connect-account"


class ConnectStatus(StrEnum):
    """Where a referrer's connected account stands, as last read from the provider."""

    ONBOARDING = "onboarding"  # created, details not all given or not yet verified
    ENABLED = "enabled"  # can receive transfers: the referrer's payout destination
    RESTRICTED = "restricted"  # was enabled, no longer can receive transfers


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the provider says of a connected account (no name, no address)."""

    account_id: str
    details_submitted: bool
    charges_enabled: bool
    payouts_enabled: bool
    transfers_active: bool

    @property
    def can_receive_transfers(self) -> bool:
        """A transfer to it would succeed and reach the referrer's bank."""
        return self.transfers_active and self.payouts_enabled


def status_after(previous: ConnectStatus | None, state: AccountState) -> ConnectStatus:
    """The status a fresh read of the account moves to.

    Never back to ``onboarding`` once enabled: an enabled account that loses its
    transfers capability is ``restricted`` (and logged so), a different thing from one
    that never finished.
    """
    if state.can_receive_transfers:
        return ConnectStatus.ENABLED
    if previous in (ConnectStatus.ENABLED, ConnectStatus.RESTRICTED):
        return ConnectStatus.RESTRICTED
    return ConnectStatus.ONBOARDING


def state_of_account(obj: Mapping[str, Any]) -> AccountState | None:
    """The state carried by a Stripe ``account`` object (an API answer or an
    ``account.updated`` event's ``data.object``); ``None`` if it is no account."""
    account_id = obj.get("id")
    if obj.get("object", "account") != "account" or not isinstance(account_id, str):
        return None
    capabilities = obj.get("capabilities")
    transfers = capabilities.get("transfers") if isinstance(capabilities, Mapping) else None
    return AccountState(
        account_id=account_id,
        details_submitted=obj.get("details_submitted") is True,
        charges_enabled=obj.get("charges_enabled") is True,
        payouts_enabled=obj.get("payouts_enabled") is True,
        transfers_active=transfers == "active",
    )


@dataclass(frozen=True, slots=True)
class ConnectRecord:
    """A referrer's connected account as the ledger holds it.

    ``account_id`` is ``None`` between storing the key and storing the answer (or
    after a crash there): the next attempt sends the same key.
    """

    referrer_id: str
    idempotency_key: str
    account_id: str | None
    status: ConnectStatus | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AccountLink:
    """A single-use link to the provider's hosted onboarding, and when it expires."""

    url: str
    expires_at: datetime


class Onboarding:
    """The use case behind ``/p/<token>/connect``, its return URL and the webhook.

    Args:
        book: the ledger's connect store.
        gateway: the provider.
        clock: the current time, timezone-aware.
    """

    def __init__(
        self, book: ConnectStore, gateway: ConnectOnboarding, clock: Callable[[], datetime]
    ) -> None:
        self._book = book
        self._gateway = gateway
        self._clock = clock

    def account_for(self, referrer_id: str) -> str:
        """The referrer's connected account, created once (key stored before the call).

        Raises:
            domain.errors.RetryableIntegrationError: the provider could not be reached
                or did not answer; the stored key makes the next attempt safe.
            domain.errors.PermanentIntegrationError: the provider refused.
        """
        record = self._book.of_referrer(referrer_id)
        if record is not None and record.account_id is not None:
            return record.account_id
        if record is None:
            record = self._book.reserve(referrer_id, account_key(referrer_id), self._clock())
        account_id = self._gateway.create_account(referrer_id, record.idempotency_key)
        self._book.attach(referrer_id, account_id, self._clock())
        return account_id

    def may_start(self, referrer_id: str) -> bool:
        """Whether to onboard the referrer: they have no connected account, or the one
        they are onboarding is ours (to finish it). A connected account another source
        set (the CRM) is left alone. A paying customer paid in credit may onboard: a
        referrer who chose cash waits for an account, and the new destination is a
        recorded change like any other."""
        if self._book.of_referrer(referrer_id) is not None:
            return True
        return bool(self._book.without_connected_account([referrer_id]))

    def start(self, referrer_id: str, return_url: str, refresh_url: str) -> AccountLink:
        """A fresh onboarding link for the referrer's (new or existing) account."""
        account_id = self.account_for(referrer_id)
        return self._gateway.create_link(account_id, return_url, refresh_url)

    def refresh(self, referrer_id: str, seen_by: str = "return") -> ConnectStatus | None:
        """Read the referrer's account back from the provider and record its state.

        Returns:
            Its status now; ``None`` when the referrer has no account yet.
        """
        record = self._book.of_referrer(referrer_id)
        if record is None or record.account_id is None:
            return None
        return self._record(record, self._gateway.retrieve(record.account_id), seen_by)

    def apply(self, state: AccountState, seen_by: str = "webhook") -> ConnectStatus | None:
        """Record a state the provider pushed (``account.updated``).

        Returns:
            The account's status; ``None`` when the account is none of ours.
        """
        record = self._book.of_account(state.account_id)
        if record is None:
            return None
        return self._record(record, state, seen_by)

    def _record(self, record: ConnectRecord, state: AccountState, seen_by: str) -> ConnectStatus:
        status = status_after(record.status, state)
        self._book.record_state(record.referrer_id, state, status, seen_by, self._clock())
        return status
