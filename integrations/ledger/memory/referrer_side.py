"""The ``referrer_side`` store in memory (issue 15): reward choices, the referrer's own
visitors and the requests for a fresh page link."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from domain.models import Contact
from domain.program import RewardChoice
from domain.referrer_page import ConversionStep, PayoutLine, ReferrerFacts, RewardLine

PAGE_LINK_NOTICE = "page_link"
_MAX_ROWS = 1000  # as the SQL store: a page lists at most this many of each


class InMemoryReferrerSideStore:
    """The referrer side, as the SQL store
    (:class:`~integrations.ledger.referrer_side.SqlReferrerSide`) keeps it.

    What this store writes (``choices``, ``visitors``, ``requests``, ``notifications``)
    is kept append-only as the SQL tables are. What it only reads lives in other areas'
    tables there; here a test seeds it directly: ``seed_contact`` (contacts, read by
    :meth:`referrer_facts` and :meth:`contacts_with_email`), ``seed_code``,
    ``seed_clicks`` (the referrer's counted clicks), ``seed_step`` (conversions),
    ``seed_reward`` and ``seed_payout`` (a payout line of one of the referrer's rewards).

    Differences from the SQL store: a request id recorded twice raises ``ValueError``
    (the SQL store's primary key raises ``IntegrityError``); the tables' checks (hashes
    of 64 characters, a known choice) are not repeated.

    Attributes:
        calls: every call made, as ``(method, arguments...)``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.choices: list[tuple[str, RewardChoice, datetime]] = []
        # (referrer id, visitor hash): first seen
        self.visitors: dict[tuple[str, str], datetime] = {}
        self.requests: list[dict[str, Any]] = []
        self.notifications: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, Contact] = {}
        self.codes: dict[str, str] = {}
        self.clicks: dict[str, int] = {}
        self.steps: dict[str, list[ConversionStep]] = {}
        self.rewards: dict[str, list[RewardLine]] = {}
        self.payouts: dict[str, list[PayoutLine]] = {}

    # -- seeding the facts other areas write -------------------------------------------

    def seed_contact(self, contact: Contact) -> None:
        self.contacts[contact.contact_id] = contact

    def seed_code(self, referrer_id: str, code: str) -> None:
        self.codes[referrer_id] = code

    def seed_clicks(self, referrer_id: str, counted: int) -> None:
        self.clicks[referrer_id] = counted

    def seed_step(self, referrer_id: str, step: ConversionStep) -> None:
        self.steps.setdefault(referrer_id, []).append(step)

    def seed_reward(self, referrer_id: str, reward: RewardLine) -> None:
        self.rewards.setdefault(referrer_id, []).append(reward)

    def seed_payout(self, referrer_id: str, payout: PayoutLine) -> None:
        self.payouts.setdefault(referrer_id, []).append(payout)

    # -- the Protocol ------------------------------------------------------------------

    def referrer_facts(self, referrer_id: str) -> ReferrerFacts | None:
        self.calls.append(("referrer_facts", referrer_id))
        contact = self.contacts.get(referrer_id)
        if contact is None:
            return None
        # Newest first, as the SQL store orders them (ties by the SQL store's key).
        steps = sorted(self.steps.get(referrer_id, []), key=lambda s: s.referee_key)
        steps.sort(key=lambda s: s.occurred_at, reverse=True)
        rewards = sorted(self.rewards.get(referrer_id, []), key=lambda r: r.reward_id)
        rewards.sort(key=lambda r: r.created_at, reverse=True)
        payouts = sorted(
            self.payouts.get(referrer_id, []), key=lambda p: p.updated_at, reverse=True
        )
        return ReferrerFacts(
            contact=contact,
            code=self.codes.get(referrer_id),
            clicks=self.clicks.get(referrer_id, 0),
            steps=tuple(steps[:_MAX_ROWS]),
            rewards=tuple(rewards[:_MAX_ROWS]),
            payouts=tuple(payouts[:_MAX_ROWS]),
            choice=self._latest([referrer_id]).get(referrer_id),
        )

    def referrers_with_rewards(self, limit: int = 1) -> list[str]:
        self.calls.append(("referrers_with_rewards", limit))
        holding = [(-len(lines), rid) for rid, lines in self.rewards.items() if lines]
        return [rid for _, rid in sorted(holding)[:limit]]

    def record_reward_choice(self, referrer_id: str, choice: RewardChoice, now: datetime) -> None:
        self.calls.append(("record_reward_choice", referrer_id, choice, now))
        self.choices.append((referrer_id, choice, now))

    def record_referrer_visitor(self, referrer_id: str, visitor_hash: str, now: datetime) -> bool:
        self.calls.append(("record_referrer_visitor", referrer_id, visitor_hash, now))
        # Keyed by the pair, as the SQL table: the first sighting is kept.
        if (referrer_id, visitor_hash) in self.visitors:
            return False
        self.visitors[referrer_id, visitor_hash] = now
        return True

    def reward_choices(self, referrer_ids: Iterable[str]) -> dict[str, RewardChoice]:
        wanted = sorted(set(referrer_ids))
        self.calls.append(("reward_choices", wanted))
        return self._latest(wanted)

    def contacts_with_email(self, email: str, limit: int = 5) -> list[str]:
        self.calls.append(("contacts_with_email", email, limit))
        wanted = email.strip().lower()
        found = sorted(
            c.contact_id
            for c in self.contacts.values()
            if c.email is not None and c.email.lower() == wanted
        )
        return found[:limit]

    def page_link_requests_since(
        self, address_hash: str, visitor_hash: str, since: datetime
    ) -> tuple[int, int]:
        self.calls.append(("page_link_requests_since", address_hash, visitor_hash, since))
        recent = [r for r in self.requests if r["requested_at"] >= since]
        return (
            sum(1 for r in recent if r["address_hash"] == address_hash),
            sum(1 for r in recent if r["visitor_hash"] == visitor_hash),
        )

    def record_page_link_request(
        self,
        request_id: str,
        address_hash: str,
        visitor_hash: str,
        referrer_ids: Sequence[str],
        now: datetime,
    ) -> int:
        self.calls.append(
            (
                "record_page_link_request",
                request_id,
                address_hash,
                visitor_hash,
                list(referrer_ids),
                now,
            )
        )
        if any(r["request_id"] == request_id for r in self.requests):
            raise ValueError(f"page link request {request_id} already recorded")
        self.requests.append(
            {
                "request_id": request_id,
                "address_hash": address_hash,
                "visitor_hash": visitor_hash,
                "queued": len(referrer_ids),
                "requested_at": now,
            }
        )
        queued = 0
        for i, referrer_id in enumerate(referrer_ids):
            notification_id = f"pl-{request_id[:24]}-{i}"
            if notification_id in self.notifications:
                continue  # one already queued under its id is left as it is
            self.notifications[notification_id] = {
                "notification_id": notification_id,
                "contact_id": referrer_id,
                "kind": PAGE_LINK_NOTICE,
                "reward_id": None,
                "data": {},
                "status": "queued",
                "created_at": now,
            }
            queued += 1
        return queued

    def _latest(self, referrer_ids: Iterable[str]) -> dict[str, RewardChoice]:
        wanted = set(referrer_ids)
        # Appended in order, so the last one seen is the latest (the SQL store's max id).
        return {rid: choice for rid, choice, _ in self.choices if rid in wanted}
