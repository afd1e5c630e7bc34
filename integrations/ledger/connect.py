"""The connect store: each referrer's Stripe Connect account and its states.

A store of its own (``ledger.connect``), bound to a unit of work's connection or each
call its own transaction. The account's creation key is stored before the provider is
called (:meth:`SqlConnectStore.reserve`); the account id the provider answered is
attached once (a trigger refuses to replace it). The first state that can receive
transfers makes the account the referrer's payout destination, with its
``payout_destination_changes`` row, in the same transaction as the state's log row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from domain.connect import (
    ACCOUNT_UPDATED,
    DESTINATION_SOURCE,
    AccountState,
    ConnectRecord,
    ConnectStatus,
)
from domain.errors import PermanentIntegrationError
from integrations.ledger.base import LedgerBase, chunks
from integrations.ledger.tables import (
    T_CONNECT_ACCOUNT_STATES,
    T_CONNECT_ACCOUNTS,
    T_CONTACTS,
    T_PAYOUT_DESTINATION_CHANGES,
)
from integrations.ledger.webhooks import mark_stripe_events, read_unprocessed_stripe_events

_STATE_FIELDS = ("details_submitted", "charges_enabled", "payouts_enabled", "transfers_active")


class SqlConnectStore(LedgerBase):
    """Connected accounts in the ledger (revision 0024)."""

    def of_referrer(self, referrer_id: str) -> ConnectRecord | None:
        with self._connect() as conn:
            return self._record(conn, T_CONNECT_ACCOUNTS.c.referrer_id == referrer_id)

    def of_account(self, account_id: str) -> ConnectRecord | None:
        with self._connect() as conn:
            return self._record(conn, T_CONNECT_ACCOUNTS.c.account_id == account_id)

    def reserve(self, referrer_id: str, idempotency_key: str, now: datetime) -> ConnectRecord:
        with self._begin() as conn:
            self._insert_ignore(
                conn,
                T_CONNECT_ACCOUNTS,
                [
                    {
                        "referrer_id": referrer_id,
                        "idempotency_key": idempotency_key,
                        "account_id": None,
                        "created_at": now,
                        "attached_at": None,
                    }
                ],
                T_CONNECT_ACCOUNTS.c.referrer_id,
            )
            record = self._record(conn, T_CONNECT_ACCOUNTS.c.referrer_id == referrer_id)
        assert record is not None  # inserted now or before
        return record

    def attach(self, referrer_id: str, account_id: str, now: datetime) -> None:
        t = T_CONNECT_ACCOUNTS
        try:
            with self._begin() as conn:
                current = conn.execute(
                    select(t.c.account_id).where(t.c.referrer_id == referrer_id)
                ).scalar_one_or_none()
                if current == account_id:
                    return
                conn.execute(
                    update(t)
                    .where(t.c.referrer_id == referrer_id)
                    .values(account_id=account_id, attached_at=now)
                )
        except IntegrityError:
            # The trigger (another account already attached) or the unique account id.
            raise PermanentIntegrationError(
                f"referrer {referrer_id} already holds another connected account"
            ) from None

    def record_state(
        self,
        referrer_id: str,
        state: AccountState,
        status: ConnectStatus,
        seen_by: str,
        now: datetime,
    ) -> bool:
        s = T_CONNECT_ACCOUNT_STATES
        row = {
            "referrer_id": referrer_id,
            "account_id": state.account_id,
            "status": status.value,
            **{name: getattr(state, name) for name in _STATE_FIELDS},
        }
        with self._begin() as conn:
            last = (
                conn.execute(
                    select(s).where(s.c.referrer_id == referrer_id).order_by(s.c.id.desc()).limit(1)
                )
                .mappings()
                .first()
            )
            # A state read again (every payout run, every return visit) is no news.
            logged = last is None or any(
                (bool(last[k]) if k in _STATE_FIELDS else last[k]) != v for k, v in row.items()
            )
            if logged:
                conn.execute(s.insert().values(**row, seen_by=seen_by, seen_at=now))
            made_destination = status is ConnectStatus.ENABLED and self._make_destination(
                conn, referrer_id, state.account_id, now
            )
        return logged or made_destination

    def without_connected_account(self, referrer_ids: list[str]) -> set[str]:
        c = T_CONTACTS.c
        wanted = sorted(set(referrer_ids))
        found: set[str] = set()
        with self._connect() as conn:
            for chunk in chunks(wanted):
                found.update(
                    conn.execute(
                        select(c.contact_id).where(
                            c.contact_id.in_(chunk),
                            c.stripe_account_id.is_(None),
                        )
                    ).scalars()
                )
        return found

    def unfinished(self, limit: int) -> list[str]:
        """Referrers whose account exists but is not enabled, least recently read
        first: the ones a payout run reads back from the provider."""
        t, s = T_CONNECT_ACCOUNTS, T_CONNECT_ACCOUNT_STATES
        last = (
            select(s.c.referrer_id, func.max(s.c.id).label("last_id"))
            .group_by(s.c.referrer_id)
            .subquery()
        )
        stmt = (
            select(t.c.referrer_id)
            .select_from(
                t.outerjoin(last, last.c.referrer_id == t.c.referrer_id).outerjoin(
                    s, s.c.id == last.c.last_id
                )
            )
            .where(
                t.c.account_id.is_not(None),
                or_(s.c.status.is_(None), s.c.status != ConnectStatus.ENABLED.value),
            )
            .order_by(func.coalesce(s.c.seen_at, t.c.created_at), t.c.referrer_id)
            .limit(limit)
        )
        with self._connect() as conn:
            return list(conn.execute(stmt).scalars())

    def account_updates(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        """Unprocessed ``account.updated`` events of the Stripe inbox (the webhook's),
        oldest first: (event id, the account object)."""
        with self._connect() as conn:
            events = read_unprocessed_stripe_events(conn, [ACCOUNT_UPDATED], None, limit)
        found: list[tuple[str, dict[str, Any]]] = []
        for event in events:
            data = event.payload.get("data")
            obj = data.get("object") if isinstance(data, dict) else None
            found.append((event.event_id, dict(obj) if isinstance(obj, dict) else {}))
        return found

    def mark_processed(self, event_ids: Sequence[str], now: datetime) -> int:
        """Mark inbox events processed; how many were not already."""
        with self._begin() as conn:
            return mark_stripe_events(conn, event_ids, now)

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _make_destination(
        conn: Connection, referrer_id: str, account_id: str, now: datetime
    ) -> bool:
        """Point the referrer's transfers at ``account_id`` with its audit row, once."""
        c = T_CONTACTS.c
        old = conn.execute(
            select(c.stripe_account_id).where(c.contact_id == referrer_id)
        ).one_or_none()
        if old is None or old[0] == account_id:
            return False
        conn.execute(
            update(T_CONTACTS)
            .where(c.contact_id == referrer_id)
            .values(stripe_account_id=account_id, updated_at=now)
        )
        conn.execute(
            T_PAYOUT_DESTINATION_CHANGES.insert().values(
                contact_id=referrer_id,
                field="stripe_account_id",
                old_value=old[0],
                new_value=account_id,
                source=DESTINATION_SOURCE,
                seen_at=now,
            )
        )
        return True

    @staticmethod
    def _record(conn: Connection, where: object) -> ConnectRecord | None:
        t, s = T_CONNECT_ACCOUNTS, T_CONNECT_ACCOUNT_STATES
        row = conn.execute(select(t).where(where)).mappings().first()  # type: ignore[arg-type]
        if row is None:
            return None
        status = conn.execute(
            select(s.c.status)
            .where(s.c.referrer_id == row["referrer_id"])
            .order_by(s.c.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        return _to_record(row, None if status is None else ConnectStatus(status))


def _to_record(row: RowMapping, status: ConnectStatus | None) -> ConnectRecord:
    return ConnectRecord(
        referrer_id=row["referrer_id"],
        idempotency_key=row["idempotency_key"],
        account_id=row["account_id"],
        status=status,
        created_at=row["created_at"],
    )
