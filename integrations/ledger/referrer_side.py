"""The referrer side's store on SQLAlchemy (issue 15): the facts of one referrer's page,
their reward choices, and the requests for a fresh page link.

Every page read is keyed by the one referrer id the caller got from a verified token:
no query here takes a code, an address or another id from the request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import func, select

from domain.models import Milestone, PayoutRailKind, RewardStatus
from domain.money import Money
from domain.program import RewardChoice
from domain.referrer_page import ConversionStep, PayoutLine, ReferrerFacts, RewardLine
from integrations.ledger.base import LedgerBase, chunks, contact_from_row
from integrations.ledger.links import counted_click
from integrations.ledger.tables import (
    T_CONTACTS,
    T_CONVERSIONS,
    T_LINK_CLICKS,
    T_PAGE_LINK_REQUESTS,
    T_PAYOUTS,
    T_REFERRAL_CODES,
    T_REFERRER_VISITORS,
    T_REWARD_CHOICES,
    T_REWARDS,
)

PAGE_LINK_NOTICE = "page_link"
_MAX_ROWS = 1000  # a page lists at most this many rewards, payouts or conversions


class SqlReferrerSide(LedgerBase):
    """:class:`domain.stores.referrer_side.ReferrerSideStore` on the SQL ledger."""

    def referrer_facts(self, referrer_id: str) -> ReferrerFacts | None:
        with self._connect() as conn:
            row = (
                conn.execute(select(T_CONTACTS).where(T_CONTACTS.c.contact_id == referrer_id))
                .mappings()
                .first()
            )
            if row is None:
                return None
            code = conn.execute(
                select(T_REFERRAL_CODES.c.code).where(T_REFERRAL_CODES.c.contact_id == referrer_id)
            ).scalar()
            clicks = conn.execute(
                select(func.count())
                .select_from(T_LINK_CLICKS)
                .where(T_LINK_CLICKS.c.referrer_id == referrer_id, counted_click())
            ).scalar_one()
            c = T_CONVERSIONS.c
            steps = tuple(
                ConversionStep(
                    # The referee's identity stays in here: only used to tell referees
                    # apart, never returned to the page.
                    referee_key=r.referee_account_id or r.referee_contact_id or r.conversion_id,
                    milestone=Milestone(r.milestone),
                    occurred_at=r.occurred_at,
                )
                for r in conn.execute(
                    select(
                        c.conversion_id,
                        c.referee_account_id,
                        c.referee_contact_id,
                        c.milestone,
                        c.occurred_at,
                    )
                    .where(c.referrer_id == referrer_id)
                    .order_by(c.occurred_at.desc(), c.conversion_id)
                    .limit(_MAX_ROWS)
                )
            )
            w = T_REWARDS.c
            rewards = tuple(
                RewardLine(
                    reward_id=r.reward_id,
                    milestone=Milestone(r.milestone),
                    amount=Money(r.amount_minor, r.currency),
                    status=RewardStatus(r.status),
                    payable_at=r.payable_at,
                    created_at=r.created_at,
                )
                for r in conn.execute(
                    select(T_REWARDS)
                    .where(w.referrer_id == referrer_id)
                    .order_by(w.created_at.desc(), w.reward_id)
                    .limit(_MAX_ROWS)
                )
            )
            p = T_PAYOUTS.c
            payouts = tuple(
                PayoutLine(
                    reward_id=r.reward_id,
                    amount=Money(r.amount_minor, r.currency),
                    rail=PayoutRailKind(r.rail),
                    status=r.status,
                    updated_at=r.updated_at,
                )
                for r in conn.execute(
                    select(p.reward_id, p.amount_minor, p.currency, p.rail, p.status, p.updated_at)
                    .join(T_REWARDS, w.reward_id == p.reward_id)
                    .where(w.referrer_id == referrer_id)
                    .order_by(p.updated_at.desc(), p.payout_id)
                    .limit(_MAX_ROWS)
                )
            )
            choice = self._latest_choices(conn, [referrer_id]).get(referrer_id)
        return ReferrerFacts(
            contact=contact_from_row(row),
            code=code,
            clicks=int(clicks),
            steps=steps,
            rewards=rewards,
            payouts=payouts,
            choice=choice,
        )

    def referrers_with_rewards(self, limit: int = 1) -> list[str]:
        """Referrers holding rewards, those with the most first (the demo shows one)."""
        with self._connect() as conn:
            return list(
                conn.execute(
                    select(T_REWARDS.c.referrer_id)
                    .group_by(T_REWARDS.c.referrer_id)
                    .order_by(func.count().desc(), T_REWARDS.c.referrer_id)
                    .limit(limit)
                ).scalars()
            )

    def record_reward_choice(self, referrer_id: str, choice: RewardChoice, now: datetime) -> None:
        with self._begin() as conn:
            conn.execute(
                T_REWARD_CHOICES.insert(),
                {"referrer_id": referrer_id, "choice": choice.value, "chosen_at": now},
            )

    def record_referrer_visitor(self, referrer_id: str, visitor_hash: str, now: datetime) -> bool:
        with self._begin() as conn:
            return bool(
                self._insert_ignore(
                    conn,
                    T_REFERRER_VISITORS,
                    [
                        {
                            "referrer_id": referrer_id,
                            "visitor_hash": visitor_hash,
                            "first_seen_at": now,
                        }
                    ],
                    T_REFERRER_VISITORS.c.visitor_hash,
                )
            )

    def reward_choices(self, referrer_ids: Iterable[str]) -> dict[str, RewardChoice]:
        with self._connect() as conn:
            return self._latest_choices(conn, sorted(set(referrer_ids)))

    @staticmethod
    def _latest_choices(conn: object, ids: Sequence[str]) -> dict[str, RewardChoice]:
        found: dict[str, RewardChoice] = {}
        t = T_REWARD_CHOICES.c
        for part in chunks(ids):
            latest = (
                select(t.referrer_id, func.max(t.choice_id).label("last"))
                .where(t.referrer_id.in_(part))
                .group_by(t.referrer_id)
                .subquery()
            )
            stmt = select(t.referrer_id, t.choice).join(latest, t.choice_id == latest.c.last)
            for referrer_id, choice in conn.execute(stmt):  # type: ignore[attr-defined]
                found[referrer_id] = RewardChoice(choice)
        return found

    def contacts_with_email(self, email: str, limit: int = 5) -> list[str]:
        wanted = email.strip().lower()
        with self._connect() as conn:
            return list(
                conn.execute(
                    select(T_CONTACTS.c.contact_id)
                    .where(func.lower(T_CONTACTS.c.email) == wanted)
                    .order_by(T_CONTACTS.c.contact_id)
                    .limit(limit)
                ).scalars()
            )

    def page_link_requests_since(
        self, address_hash: str, visitor_hash: str, since: datetime
    ) -> tuple[int, int]:
        t = T_PAGE_LINK_REQUESTS.c
        with self._connect() as conn:
            by_address = conn.execute(
                select(func.count()).where(t.address_hash == address_hash, t.requested_at >= since)
            ).scalar_one()
            by_visitor = conn.execute(
                select(func.count()).where(t.visitor_hash == visitor_hash, t.requested_at >= since)
            ).scalar_one()
        return int(by_address), int(by_visitor)

    def record_page_link_request(
        self,
        request_id: str,
        address_hash: str,
        visitor_hash: str,
        referrer_ids: Sequence[str],
        now: datetime,
    ) -> int:
        with self._begin() as conn:
            conn.execute(
                T_PAGE_LINK_REQUESTS.insert(),
                {
                    "request_id": request_id,
                    "address_hash": address_hash,
                    "visitor_hash": visitor_hash,
                    "queued": len(referrer_ids),
                    "requested_at": now,
                },
            )
            # The link itself is made when the email is composed (a fresh token,
            # never stored in the ledger).
            return self._queue_notifications(
                conn,
                [
                    {
                        "notification_id": f"pl-{request_id[:24]}-{i}",
                        "contact_id": referrer_id,
                        "kind": PAGE_LINK_NOTICE,
                        "reward_id": None,
                        "data": {},
                    }
                    for i, referrer_id in enumerate(referrer_ids)
                ],
                now,
            )
