"""The tracked link in the ledger: whose a code is, and its clicks stored once each.

The ``links`` store (:class:`domain.stores.links.LinkStore`). The link app
(:mod:`integrations.web`) asks :meth:`SqlLinkStore.live_referrer` which referrer a code
belongs to (cached there), and stores clicks in batches with
:meth:`SqlLinkStore.record_link_clicks`: one transaction per batch, each click once by
its id, so a batch written again after a failure adds nothing twice.

A click from a browser the referrer opened their own page in (``referrer_visitors``) is
the referrer's own: :func:`own_click` tells it when clicks are read, never when they are
stored, so the hot path stays one insert and a click made before the referrer first
opened their page stops counting as soon as they do.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, select

from domain.links import LinkClick
from integrations.ledger.base import LedgerBase
from integrations.ledger.tables import (
    T_LINK_CLICKS,
    T_REFERRER_VISITORS,
    ContactRow,
    ReferralCodeRow,
)

PERSON = "person"


def own_click() -> ColumnElement[bool]:
    """True for a ``link_clicks`` row whose visitor is one of the code owner's own (seen
    on their page): the referrer clicking their own link, never counted nor a touch."""
    return exists().where(
        T_REFERRER_VISITORS.c.referrer_id == T_LINK_CLICKS.c.referrer_id,
        T_REFERRER_VISITORS.c.visitor_hash == T_LINK_CLICKS.c.visitor_hash,
    )


def counted_click() -> ColumnElement[bool]:
    """True for a click that counts: a person's, not the referrer's own."""
    return (T_LINK_CLICKS.c.visitor_kind == PERSON) & ~own_click()


def click_row(click: LinkClick, now: datetime) -> dict[str, Any]:
    return {
        "click_id": click.click_id,
        "code": click.code,
        "referrer_id": click.referrer_id,
        "clicked_at": click.clicked_at,
        "visitor_hash": click.visitor_hash,
        "visitor_kind": click.kind.value,
        "created_at": now,
    }


class SqlLinkStore(LedgerBase):
    """Codes and clicks of the tracked link (the ``links`` store)."""

    def live_referrer(self, code: str) -> str | None:
        """The owner of ``code`` if its link is live: ``None`` for an unknown code and
        for a revoked one (its owner opted out of the program). Both answers take one
        and the same query, so neither is told from the other by its timing."""
        with self._connect() as conn:
            row = conn.execute(
                select(ReferralCodeRow.contact_id, ContactRow.opted_out)
                .outerjoin(ContactRow, ContactRow.contact_id == ReferralCodeRow.contact_id)
                .where(ReferralCodeRow.code == code)
            ).first()
        if row is None or row.opted_out:
            return None
        return str(row.contact_id)

    def record_link_clicks(self, clicks: Sequence[LinkClick], now: datetime) -> int:
        """Store ``clicks`` in one transaction; those already stored are left as they
        are. Returns how many were new."""
        rows = [click_row(c, now) for c in clicks]
        with self._begin() as conn:
            return len(self._insert_ignore(conn, T_LINK_CLICKS, rows, T_LINK_CLICKS.c.click_id))
