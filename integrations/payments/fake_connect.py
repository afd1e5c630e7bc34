"""An in-memory Connect onboarding that records what it was asked, for tests and dry runs."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from domain.connect import AccountLink, AccountState
from domain.errors import PermanentIntegrationError


class RecordingConnect:
    """A :class:`domain.ports.ConnectOnboarding` in memory, with Stripe's key rules: the
    same idempotency key for the same referrer answers the same account; for another
    referrer it is refused.

    Attributes:
        accounts: referrer id by account id, one per account made.
        create_calls: (referrer id, key) of every creation asked, replays included.
        links: (account id, return URL, refresh URL) of every link made.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, str] = {}
        self.create_calls: list[tuple[str, str]] = []
        self.links: list[tuple[str, str, str]] = []
        self._by_key: dict[str, tuple[str, str]] = {}
        self._states: dict[str, AccountState] = {}
        self._lock = threading.Lock()

    def create_account(self, referrer_id: str, idempotency_key: str) -> str:
        with self._lock:
            self.create_calls.append((referrer_id, idempotency_key))
            saved = self._by_key.get(idempotency_key)
            if saved is not None:
                if saved[0] != referrer_id:
                    raise PermanentIntegrationError("idempotency key reused with other parameters")
                return saved[1]
            account_id = f"acct_rec{len(self.accounts) + 1:04d}"
            self.accounts[account_id] = referrer_id
            self._by_key[idempotency_key] = (referrer_id, account_id)
            self._states[account_id] = AccountState(account_id, False, False, False, False)
            return account_id

    def create_link(self, account_id: str, return_url: str, refresh_url: str) -> AccountLink:
        with self._lock:
            if account_id not in self.accounts:
                raise PermanentIntegrationError("no such account")
            self.links.append((account_id, return_url, refresh_url))
            return AccountLink(
                url=f"https://connect.invalid/setup/{account_id}/{len(self.links)}",
                expires_at=datetime.now(UTC) + timedelta(minutes=5),
            )

    def retrieve(self, account_id: str) -> AccountState:
        with self._lock:
            if account_id not in self._states:
                raise PermanentIntegrationError("no such account")
            return self._states[account_id]

    def complete(self, account_id: str) -> AccountState:
        """Play the referrer finishing the hosted onboarding: the account is enabled."""
        with self._lock:
            self._states[account_id] = AccountState(account_id, True, True, True, True)
            return self._states[account_id]
