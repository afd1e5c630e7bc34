"""Stripe Connect onboarding on the official ``stripe`` library: the referrer's Express
account, links to Stripe's hosted onboarding, and the account's state read back
(:class:`domain.ports.ConnectOnboarding`).

* ``POST /v1/accounts`` (``type=express``, the ``transfers`` capability requested) with
  the idempotency key the ledger stored before the call: the library sends it on its
  own retries too, and a retry after a crash gets the account already made.
* ``POST /v1/account_links`` (``type=account_onboarding``): single-use, minutes long,
  so no key: a lost answer costs one more link, never a second account. The link's
  URL is a bearer credential for the referrer's onboarding: it is neither stored nor
  logged.
* ``GET /v1/accounts/{id}``: ``charges_enabled``, ``payouts_enabled``,
  ``details_submitted`` and ``capabilities.transfers``.

Metadata carries ``referrer_id`` (the CRM contact id) only; no page token, address or
name ever reaches Stripe from here, and error texts are stripped of keys and addresses.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self

import requests
import stripe

from domain.connect import AccountLink, AccountState, state_of_account
from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.models import PayoutOutcome
from integrations.payments.stripe_rail import (
    DEFAULT_TIMEOUT_SECONDS,
    OwnsSession,
    build_stripe_client,
    classify_stripe_error,
)
from integrations.payments.throttle import (
    CREATE_ACCOUNT,
    CREATE_ACCOUNT_LINK,
    RETRIEVE_ACCOUNT,
    Throttle,
    no_throttle,
)


def _raise(what: str, exc: stripe.StripeError) -> None:
    outcome, text = classify_stripe_error(exc)
    if outcome is PayoutOutcome.RETRYABLE:
        raise RetryableIntegrationError(f"{what}: {text}") from None
    raise PermanentIntegrationError(f"{what}: {text}") from None


class StripeConnect(OwnsSession):
    """Onboards referrers to Stripe Connect Express accounts.

    Args:
        client: a client built by :func:`~integrations.payments.stripe_rail.
            build_stripe_client` (the rails' client will do).
        session: a session this adapter owns and closes in :meth:`close`.
        throttle: the rails' shared Stripe rate limit.
    """

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        session: requests.Session | None = None,
        throttle: Throttle | None = None,
    ) -> None:
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
        """An adapter with its own client and HTTP session; close it (or use ``with``)."""
        session = requests.Session()
        client = build_stripe_client(
            api_key, api_base, max_network_retries, timeout=timeout, session=session
        )
        return cls(client, session=session)

    def create_account(self, referrer_id: str, idempotency_key: str) -> str:
        """Create (or, with a key already used, get back) the referrer's Express account."""
        self._throttle(1, endpoint=CREATE_ACCOUNT)
        try:
            account = self._client.v1.accounts.create(
                {
                    "type": "express",
                    "capabilities": {"transfers": {"requested": True}},
                    "metadata": {"referrer_id": referrer_id},
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            _raise("creating the connected account", exc)
            raise  # unreachable: _raise always raises
        return account.id

    def create_link(self, account_id: str, return_url: str, refresh_url: str) -> AccountLink:
        """A fresh single-use link to Stripe's hosted onboarding for ``account_id``."""
        self._throttle(1, endpoint=CREATE_ACCOUNT_LINK)
        try:
            link = self._client.v1.account_links.create(
                {
                    "account": account_id,
                    "type": "account_onboarding",
                    "return_url": return_url,
                    "refresh_url": refresh_url,
                }
            )
        except stripe.StripeError as exc:
            _raise("creating an onboarding link", exc)
            raise
        return AccountLink(url=link.url, expires_at=datetime.fromtimestamp(link.expires_at, UTC))

    def retrieve(self, account_id: str) -> AccountState:
        """The account's state as Stripe has it now."""
        self._throttle(1, endpoint=RETRIEVE_ACCOUNT)
        try:
            account = self._client.v1.accounts.retrieve(account_id)
        except stripe.StripeError as exc:
            _raise("reading the connected account", exc)
            raise
        obj: dict[str, Any] = account.to_dict(recursive=True)
        state = state_of_account(obj)
        if state is None:
            raise PermanentIntegrationError("Stripe answered something other than an account")
        return state
