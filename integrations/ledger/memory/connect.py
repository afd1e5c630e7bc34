"""The ``connect`` store in memory: referrers' connected accounts and their states."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from domain.connect import (
    ACCOUNT_UPDATED,
    DESTINATION_SOURCE,
    AccountState,
    ConnectRecord,
    ConnectStatus,
)
from domain.errors import PermanentIntegrationError

_STATE_FIELDS = ("details_submitted", "charges_enabled", "payouts_enabled", "transfers_active")


class InMemoryConnectStore:
    """Connected accounts, as the SQL store
    (:class:`~integrations.ledger.connect.SqlConnectStore`) keeps them.

    One account per referrer, its creation key stored by :meth:`reserve` before the
    provider is called and never changed; the account id set once by :meth:`attach`
    (another id raises :class:`~domain.errors.PermanentIntegrationError`, as the SQL
    store turns the database trigger's refusal into); ``states`` is only ever appended.

    What the SQL store reads from other areas' tables is seeded here: ``seed_contact``
    (a contact and its ``stripe_account_id``, read by :meth:`without_connected_account`
    and updated when an account is first enabled, with a row in
    ``destination_changes``) and ``seed_stripe_event`` (the Stripe inbox, read by
    :meth:`account_updates` and marked by :meth:`mark_processed`). The states table's
    checks (a known ``status`` and ``seen_by``) are not repeated here.

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.accounts: dict[str, dict[str, Any]] = {}
        self.states: list[dict[str, Any]] = []
        self.contacts: dict[str, str | None] = {}  # contact id: stripe account id
        self.destination_changes: list[dict[str, Any]] = []
        self.events: dict[str, dict[str, Any]] = {}

    # -- seeding the facts other areas write -------------------------------------------

    def seed_contact(self, contact_id: str, stripe_account_id: str | None = None) -> None:
        self.contacts[contact_id] = stripe_account_id

    def seed_stripe_event(
        self, event_id: str, type_: str, created_at: datetime, payload: dict[str, Any]
    ) -> None:
        self.events[event_id] = {
            "event_id": event_id,
            "type": type_,
            "created_at": created_at,
            "payload": payload,
            "processed_at": None,
        }

    # -- the Protocol ------------------------------------------------------------------

    def of_referrer(self, referrer_id: str) -> ConnectRecord | None:
        self.calls.append(("of_referrer", referrer_id))
        return self._record(referrer_id)

    def of_account(self, account_id: str) -> ConnectRecord | None:
        self.calls.append(("of_account", account_id))
        for referrer_id, row in self.accounts.items():
            if row["account_id"] == account_id:
                return self._record(referrer_id)
        return None

    def reserve(self, referrer_id: str, idempotency_key: str, now: datetime) -> ConnectRecord:
        self.calls.append(("reserve", referrer_id, idempotency_key, now))
        self.accounts.setdefault(
            referrer_id,
            {
                "idempotency_key": idempotency_key,
                "account_id": None,
                "created_at": now,
                "attached_at": None,
            },
        )
        record = self._record(referrer_id)
        assert record is not None  # inserted now or before
        return record

    def attach(self, referrer_id: str, account_id: str, now: datetime) -> None:
        self.calls.append(("attach", referrer_id, account_id, now))
        row = self.accounts.get(referrer_id)
        if row is None or row["account_id"] == account_id:
            return  # the SQL update matches no row / the same answer again
        held_elsewhere = any(
            r["account_id"] == account_id for rid, r in self.accounts.items() if rid != referrer_id
        )
        if row["account_id"] is not None or held_elsewhere:
            raise PermanentIntegrationError(
                f"referrer {referrer_id} already holds another connected account"
            )
        row["account_id"] = account_id
        row["attached_at"] = now

    def record_state(
        self,
        referrer_id: str,
        state: AccountState,
        status: ConnectStatus,
        seen_by: str,
        now: datetime,
    ) -> bool:
        self.calls.append(("record_state", referrer_id, state, status, seen_by, now))
        row = {
            "referrer_id": referrer_id,
            "account_id": state.account_id,
            "status": status.value,
            **{name: getattr(state, name) for name in _STATE_FIELDS},
        }
        last = self._last_state(referrer_id)
        # A state read again (every payout run, every return visit) is no news.
        logged = last is None or any(last[k] != v for k, v in row.items())
        if logged:
            self.states.append({**row, "seen_by": seen_by, "seen_at": now})
        made_destination = status is ConnectStatus.ENABLED and self._make_destination(
            referrer_id, state.account_id, now
        )
        return logged or made_destination

    def without_connected_account(self, referrer_ids: list[str]) -> set[str]:
        self.calls.append(("without_connected_account", sorted(set(referrer_ids))))
        return {rid for rid in referrer_ids if rid in self.contacts and self.contacts[rid] is None}

    def unfinished(self, limit: int) -> list[str]:
        self.calls.append(("unfinished", limit))
        waiting: list[tuple[datetime, str]] = []
        for referrer_id, row in self.accounts.items():
            if row["account_id"] is None:
                continue
            last = self._last_state(referrer_id)
            if last is not None and last["status"] == ConnectStatus.ENABLED.value:
                continue
            waiting.append((row["created_at"] if last is None else last["seen_at"], referrer_id))
        return [rid for _, rid in sorted(waiting)[:limit]]

    def account_updates(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        self.calls.append(("account_updates", limit))
        events = sorted(
            (
                e
                for e in self.events.values()
                if e["processed_at"] is None and e["type"] == ACCOUNT_UPDATED
            ),
            key=lambda e: (e["created_at"], e["event_id"]),
        )[:limit]
        found: list[tuple[str, dict[str, Any]]] = []
        for event in events:
            data = event["payload"].get("data")
            obj = data.get("object") if isinstance(data, dict) else None
            found.append((event["event_id"], dict(obj) if isinstance(obj, dict) else {}))
        return found

    def mark_processed(self, event_ids: Sequence[str], now: datetime) -> int:
        self.calls.append(("mark_processed", list(event_ids), now))
        marked = 0
        for event_id in sorted(set(event_ids)):
            event = self.events.get(event_id)
            if event is not None and event["processed_at"] is None:
                event["processed_at"] = now
                marked += 1
        return marked

    # -- helpers -----------------------------------------------------------------------

    def _last_state(self, referrer_id: str) -> dict[str, Any] | None:
        mine = [s for s in self.states if s["referrer_id"] == referrer_id]
        return mine[-1] if mine else None

    def _make_destination(self, referrer_id: str, account_id: str, now: datetime) -> bool:
        if referrer_id not in self.contacts or self.contacts[referrer_id] == account_id:
            return False
        old = self.contacts[referrer_id]
        self.contacts[referrer_id] = account_id
        self.destination_changes.append(
            {
                "contact_id": referrer_id,
                "field": "stripe_account_id",
                "old_value": old,
                "new_value": account_id,
                "source": DESTINATION_SOURCE,
                "seen_at": now,
            }
        )
        return True

    def _record(self, referrer_id: str) -> ConnectRecord | None:
        row = self.accounts.get(referrer_id)
        if row is None:
            return None
        last = self._last_state(referrer_id)
        return ConnectRecord(
            referrer_id=referrer_id,
            idempotency_key=row["idempotency_key"],
            account_id=row["account_id"],
            status=None if last is None else ConnectStatus(last["status"]),
            created_at=row["created_at"],
        )
