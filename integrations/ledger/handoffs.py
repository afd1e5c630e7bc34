"""The ledger's side of detractor hand-offs (see :mod:`integrations.ledger.tables`).

Exactly once, as asks and notifications: a hand-off row is written (``queued``) before
anything is sent, claimed (``sending``) by a conditional UPDATE before the call, and
settled after it. Two runs racing claim disjoint rows; a claim a dead sender left is
marked ``unknown`` for a person instead of being sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, literal, null, select, update

from domain.detractors import DONE, Channel, DetractorFollowUp, HandoffResult
from integrations.ledger.base import LedgerBase, chunks
from integrations.ledger.tables import (
    T_DETRACTOR_HANDOFFS,
    AccountRow,
    ContactRow,
    FollowUpRow,
)


def _columns(channel: Channel) -> tuple[Any, Any, Any, Any]:
    """The channel's status, ref, error and time columns."""
    c = T_DETRACTOR_HANDOFFS.c
    return c[f"{channel}_status"], c[f"{channel}_ref"], c[f"{channel}_error"], c[f"{channel}_at"]


__all__ = ["DONE", "Channel", "HandoffResult", "SqlHandoffsStore"]


class SqlHandoffsStore(LedgerBase):
    """The ``handoffs`` store: detractor follow-ups handed on to a person."""

    def detractors_not_handed_on(self) -> int:
        """Follow-ups with no hand-off row yet (none was opened: no owner configured)."""
        with self._connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(FollowUpRow)
                    .where(~self._handed_on(FollowUpRow.source_event))
                ).scalar_one()
            )

    def open_handoffs(self, now: datetime, with_crm: bool) -> int:
        """Write a hand-off (email ``queued``; CRM ``queued`` when ``with_crm``, else
        none) for every follow-up that has none, in one statement; the number written."""
        stmt = (
            self._insert(T_DETRACTOR_HANDOFFS)
            .from_select(
                ["source_event", "contact_id", "created_at", "email_status", "crm_status"],
                select(
                    FollowUpRow.source_event,
                    FollowUpRow.contact_id,
                    literal(now, T_DETRACTOR_HANDOFFS.c.created_at.type),
                    literal("queued", T_DETRACTOR_HANDOFFS.c.email_status.type),
                    literal("queued", T_DETRACTOR_HANDOFFS.c.crm_status.type)
                    if with_crm
                    else null(),
                ).where(~self._handed_on(FollowUpRow.source_event)),
            )
            .on_conflict_do_nothing()
            .execution_options(preserve_rowcount=True)
        )
        with self._begin() as conn:
            return max(conn.execute(stmt).rowcount, 0)

    def handoffs_to_send(self, channel: Channel, after: str, limit: int) -> list[DetractorFollowUp]:
        """The ``queued`` hand-offs of ``channel``, by key after ``after``."""
        status = _columns(channel)[0]
        h, f = T_DETRACTOR_HANDOFFS.c, FollowUpRow
        with self._connect() as conn:
            rows = conn.execute(
                select(
                    h.source_event,
                    f.contact_id,
                    ContactRow.name.label("contact_name"),
                    f.account_id,
                    AccountRow.name.label("account_name"),
                    f.score,
                    f.occurred_at,
                )
                .select_from(
                    T_DETRACTOR_HANDOFFS.join(f, f.source_event == h.source_event)
                    .outerjoin(ContactRow, ContactRow.contact_id == f.contact_id)
                    .outerjoin(AccountRow, AccountRow.account_id == f.account_id)
                )
                .where(status == "queued", h.source_event > after)
                .order_by(h.source_event)
                .limit(limit)
            ).mappings()
            return [DetractorFollowUp(**dict(r)) for r in rows]

    def queued_handoffs(self, channel: Channel) -> int:
        """How many hand-offs of ``channel`` wait to be sent."""
        status = _columns(channel)[0]
        with self._connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(T_DETRACTOR_HANDOFFS).where(status == "queued")
                ).scalar_one()
            )

    def claim_handoffs(self, channel: Channel, keys: Sequence[str], now: datetime) -> list[str]:
        """Move ``queued`` hand-offs of ``channel`` to ``sending``; the keys this caller
        claimed (another run may have taken some)."""
        status, _, _, at = _columns(channel)
        key = T_DETRACTOR_HANDOFFS.c.source_event
        claimed: list[str] = []
        with self._begin() as conn:
            for chunk in chunks(keys):
                claimed += (
                    conn.execute(
                        update(T_DETRACTOR_HANDOFFS)
                        .where(key.in_(chunk), status == "queued")
                        .values({status: "sending", at: now})
                        .returning(key)
                    )
                    .scalars()
                    .all()
                )
        return claimed

    def expire_handoff_claims(self, channel: Channel, claimed_before: datetime) -> int:
        """Mark ``unknown`` the claims of ``channel`` older than ``claimed_before``:
        their sender died between the call and the record, so it may have gone out."""
        status, _, _, at = _columns(channel)
        with self._begin() as conn:
            return conn.execute(
                update(T_DETRACTOR_HANDOFFS)
                .where(status == "sending", at < claimed_before)
                .values({status: "unknown"})
            ).rowcount

    def record_handoff_results(
        self, channel: Channel, results: Sequence[HandoffResult], now: datetime
    ) -> None:
        """Settle claimed hand-offs of ``channel``; a row not ``sending`` is left alone."""
        if not results:
            return
        allowed = {DONE[channel], "failed", "queued", "unknown"}
        if wrong := {r.status for r in results} - allowed:
            raise ValueError(f"not a {channel} hand-off result: {sorted(wrong)}")
        status, ref, error, at = _columns(channel)
        stmt = (
            update(T_DETRACTOR_HANDOFFS)
            .where(
                and_(T_DETRACTOR_HANDOFFS.c.source_event == bindparam("h_key"), status == "sending")
            )
            .values(
                {
                    status: bindparam("h_status"),
                    ref: bindparam("h_ref"),
                    error: bindparam("h_error"),
                    at: bindparam("h_at"),
                }
            )
        )
        rows = [
            {
                "h_key": r.source_event,
                "h_status": r.status,
                "h_ref": r.ref[:128] if r.ref else None,
                "h_error": r.error[:512] if r.error else None,
                # Kept as the claim time when unsettled, so the claim can still expire.
                "h_at": now if r.status == DONE[channel] else None,
            }
            for r in results
        ]
        with self._begin() as conn:
            conn.execute(stmt, rows)

    def handoff_counts(self) -> dict[str, dict[str, int]]:
        """Hand-offs per status of each channel (CRM: only rows that have one)."""
        with self._connect() as conn:
            counts: dict[str, dict[str, int]] = {}
            for channel in ("email", "crm"):
                status = _columns(channel)[0]
                counts[channel] = {
                    str(s): int(n)
                    for s, n in conn.execute(
                        select(status, func.count()).where(status.is_not(None)).group_by(status)
                    ).all()
                }
            return counts

    @staticmethod
    def _handed_on(source_event: Any) -> Any:
        return (
            select(T_DETRACTOR_HANDOFFS.c.source_event)
            .where(T_DETRACTOR_HANDOFFS.c.source_event == source_event)
            .exists()
        )
