"""The payout destination changes, in the ledger (the ``destinations`` store).

* :func:`record_destination_changes`: run inside ``record_batch``'s transaction, so a
  contact is never stored with a new payout destination without its audit row.
* :func:`changed_destination_referrers`
  (:meth:`SqlDestinationsStore.referrers_with_changed_destination`): the referrers whose
  payouts wait for a person (a change seen after the last approval of one of their
  rewards flagged ``payout_destination_changed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, exists, select

from domain.fraud import PAYOUT_DESTINATION_CHANGED, destination_changes
from domain.models import Contact
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    contact_from_row,
)
from integrations.ledger.tables import (
    T_APPROVAL_DECISIONS,
    T_CONTACTS,
    T_PAYOUT_DESTINATION_CHANGES,
    T_REWARDS,
)


def record_destination_changes(
    conn: Connection, contacts: Sequence[Contact], source: str, now: datetime
) -> int:
    """Write one ``payout_destination_changes`` row per destination field that
    ``contacts`` (about to be stored) change on a contact already stored.

    Args:
        conn: the transaction that stores the contacts.
        contacts: the rows about to be stored.
        source: the source they were read from.
        now: when the change was seen.

    Returns:
        How many changes were recorded.
    """
    # Only a row that names a destination can change one (none keeps the stored one).
    naming = [c for c in contacts if c.stripe_account_id or c.stripe_customer_id]
    stored: dict[str, Contact] = {}
    for chunk in chunks(sorted({c.contact_id for c in naming})):
        stored.update(
            (row["contact_id"], contact_from_row(row))
            for row in conn.execute(
                select(T_CONTACTS).where(T_CONTACTS.c.contact_id.in_(chunk))
            ).mappings()
        )
    rows = [
        {
            "contact_id": change.contact_id,
            "field": change.field,
            "old_value": change.old,
            "new_value": change.new,
            "source": source,
            "seen_at": now,
        }
        for change in destination_changes(stored, naming)
    ]
    if rows:
        conn.execute(T_PAYOUT_DESTINATION_CHANGES.insert(), rows)
    return len(rows)


def changed_destination_referrers(conn: Connection, referrer_ids: Iterable[str]) -> set[str]:
    """Those of ``referrer_ids`` with a payout destination change not yet seen by a
    person: no reward of theirs flagged ``payout_destination_changed`` was approved
    since the change (a decision at any stage counts).

    A function on a connection, as reward routing reads it in its own transaction.
    """
    wanted = sorted(set(referrer_ids))
    acknowledged = exists().where(
        T_APPROVAL_DECISIONS.c.reward_id == T_REWARDS.c.reward_id,
        T_APPROVAL_DECISIONS.c.decision == "approve",
        T_APPROVAL_DECISIONS.c.decided_at >= T_PAYOUT_DESTINATION_CHANGES.c.seen_at,
        T_REWARDS.c.referrer_id == T_PAYOUT_DESTINATION_CHANGES.c.contact_id,
        T_REWARDS.c.flags.contains(PAYOUT_DESTINATION_CHANGED, autoescape=True),
    )
    found: set[str] = set()
    for chunk in chunks(wanted):
        found.update(
            conn.execute(
                select(T_PAYOUT_DESTINATION_CHANGES.c.contact_id)
                .where(T_PAYOUT_DESTINATION_CHANGES.c.contact_id.in_(chunk), ~acknowledged)
                .distinct()
            ).scalars()
        )
    return found


class SqlDestinationsStore(LedgerBase):
    """The ``destinations`` store: the payout destination changes of contacts."""

    def destination_changes_of(self, contact_id: str) -> list[dict[str, object]]:
        """The recorded payout destination changes of one contact, oldest first."""
        with self._connect() as conn:
            return [
                dict(row)
                for row in conn.execute(
                    select(T_PAYOUT_DESTINATION_CHANGES)
                    .where(T_PAYOUT_DESTINATION_CHANGES.c.contact_id == contact_id)
                    .order_by(
                        T_PAYOUT_DESTINATION_CHANGES.c.seen_at, T_PAYOUT_DESTINATION_CHANGES.c.id
                    )
                ).mappings()
            ]

    def referrers_with_changed_destination(self, referrer_ids: Iterable[str]) -> set[str]:
        """Those of ``referrer_ids`` with a payout destination change not yet seen by a
        person (see :func:`changed_destination_referrers`)."""
        with self._connect() as conn:
            return changed_destination_referrers(conn, referrer_ids)
