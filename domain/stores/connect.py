"""The connect store's port: referrers' connected accounts and their states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from domain.connect import AccountState, ConnectRecord, ConnectStatus


class ConnectStore(Protocol):
    """Each referrer's connected account (one, ever), the key that created it, and an
    append-only log of the states read from the provider."""

    def of_referrer(self, referrer_id: str) -> ConnectRecord | None:
        """The referrer's record, with its latest status; ``None`` if never started."""
        ...

    def of_account(self, account_id: str) -> ConnectRecord | None:
        """The record holding ``account_id``; ``None`` for an account not ours."""
        ...

    def reserve(self, referrer_id: str, idempotency_key: str, now: datetime) -> ConnectRecord:
        """Store the creation key before the provider is called (once: a second call
        returns the record already stored, with its key)."""
        ...

    def attach(self, referrer_id: str, account_id: str, now: datetime) -> None:
        """Store the account the provider created; the same id again changes nothing.

        Raises:
            domain.errors.PermanentIntegrationError: the referrer already holds another
                account (the database refuses to replace one).
        """
        ...

    def record_state(
        self,
        referrer_id: str,
        state: AccountState,
        status: ConnectStatus,
        seen_by: str,
        now: datetime,
    ) -> bool:
        """Log the state read (only when it differs from the last one logged) and, the
        first time the account is enabled, make it the referrer's payout destination,
        recording the change (source ``connect-onboarding``); in one transaction.

        Returns:
            Whether anything was recorded.
        """
        ...

    def without_connected_account(self, referrer_ids: list[str]) -> set[str]:
        """Those of ``referrer_ids`` that are known contacts with no connected account
        id (the ones onboarding can give a transfer destination)."""
        ...

    def unfinished(self, limit: int) -> list[str]:
        """Referrers whose account exists but is not enabled, least recently read first."""
        ...

    def account_updates(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Unprocessed ``account.updated`` events of the Stripe inbox, oldest first:
        (event id, the account object)."""
        ...

    def mark_processed(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark inbox events processed; how many were not already."""
        ...
