"""The ``asks`` store in memory: moments, contacts, codes and asks in dicts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from domain.models import Ask, AskDecision, Contact, ContactHistory, Moment, SkipReason
from domain.shards import Shard


class InMemoryAskStore:
    """A recording fake of :class:`domain.stores.asks.AskStore`.

    The test puts in what the SQL ledger would hold from intake: ``moments``,
    ``people``, ``history`` and ``domains``.

    Attributes:
        moments: moment id -> (moment, status: ``new``, ``asked`` or ``skipped``).
        people: contact id -> contact.
        history: contact id -> history (a contact not in it has an empty one).
        domains: account id -> email domain.
        codes: contact id -> referral code.
        asks: ask id -> (ask, the time it is dated by, status).
        skip_reasons: moment id -> the reason it was skipped.
        calls: (method, arguments) of every call, in order.
    """

    def __init__(self) -> None:
        self.moments: dict[str, tuple[Moment, str]] = {}
        self.people: dict[str, Contact] = {}
        self.history: dict[str, ContactHistory] = {}
        self.domains: dict[str, str] = {}
        self.codes: dict[str, str] = {}
        self.asks: dict[str, tuple[Ask, datetime, str]] = {}
        self.skip_reasons: dict[str, str | None] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def pending_moments(
        self, as_of: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Moment]:
        self.calls.append(("pending_moments", (as_of, limit, after)))
        pending = [m for m, status in self.moments.values() if status == "new"]
        pending = [m for m in pending if m.occurred_at <= as_of]
        if after is not None:
            pending = [m for m in pending if (m.occurred_at, m.moment_id) > after]
        return sorted(pending, key=lambda m: (m.occurred_at, m.moment_id))[:limit]

    def contacts(self, contact_ids: Iterable[str]) -> dict[str, Contact]:
        ids = sorted(set(contact_ids))
        self.calls.append(("contacts", (ids,)))
        return {c: self.people[c] for c in ids if c in self.people}

    def histories(
        self,
        contact_ids: Iterable[str],
        as_of: datetime,
        blocking_priorities: Sequence[str],
        nps_since: datetime | None = None,
    ) -> dict[str, ContactHistory]:
        ids = sorted(set(contact_ids))
        self.calls.append(("histories", (ids, as_of, list(blocking_priorities), nps_since)))
        return {c: self.history.get(c, ContactHistory()) for c in ids}

    def codes_for(self, contact_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(contact_ids))
        self.calls.append(("codes_for", (ids,)))
        return {c: self.codes[c] for c in ids if c in self.codes}

    def asked_contacts(self, until: datetime) -> list[str]:
        self.calls.append(("asked_contacts", (until,)))
        return sorted({ask.contact_id for ask, at, _ in self.asks.values() if at <= until})

    def account_domains(self, account_ids: Iterable[str]) -> dict[str, str]:
        ids = sorted(set(account_ids))
        self.calls.append(("account_domains", (ids,)))
        return {a: self.domains[a] for a in ids if self.domains.get(a)}

    def add_codes(self, new_codes: Mapping[str, str], now: datetime) -> int:
        self.calls.append(("add_codes", (dict(new_codes), now)))
        taken = set(self.codes.values())
        added = 0
        for contact_id, code in new_codes.items():
            if contact_id not in self.codes and code not in taken:
                self.codes[contact_id] = code
                taken.add(code)
                added += 1
        return added

    def queue_asks(self, asks: Sequence[Ask], as_of: datetime) -> list[str]:
        self.calls.append(("queue_asks", (list(asks), as_of)))
        queued = []
        for ask in asks:
            if ask.ask_id not in self.asks:
                self.asks[ask.ask_id] = (ask, as_of, "queued")
                queued.append(ask.ask_id)
        return queued

    def close_moments(self, decisions: Sequence[AskDecision], now: datetime) -> None:
        self.calls.append(("close_moments", (list(decisions), now)))
        for decision in decisions:
            moment_id = decision.moment.moment_id
            if moment_id in self.moments and self.moments[moment_id][1] == "new":
                status = "asked" if decision.ask else "skipped"
                self.moments[moment_id] = (self.moments[moment_id][0], status)
                self.skip_reasons[moment_id] = decision.reason.value if decision.reason else None

    def skip_moments(self, skipped: Mapping[SkipReason, Sequence[str]], now: datetime) -> None:
        self.calls.append(("skip_moments", ({r: list(ids) for r, ids in skipped.items()}, now)))
        for reason, moment_ids in skipped.items():
            for moment_id in moment_ids:
                if moment_id in self.moments and self.moments[moment_id][1] == "new":
                    self.moments[moment_id] = (self.moments[moment_id][0], "skipped")
                    self.skip_reasons[moment_id] = reason.value

    def asks_to_send(
        self, after: str, limit: int, shard: Shard | None = None
    ) -> list[tuple[Ask, Contact, str]]:
        self.calls.append(
            ("asks_to_send", (after, limit) if shard is None else (after, limit, shard))
        )
        return [
            (ask, self.people[ask.contact_id], self.moments[ask.moment_id][0].detail)
            for ask_id, (ask, _, status) in sorted(self.asks.items())
            if status == "queued"
            and ask_id > after
            and ask.contact_id in self.people
            and ask.moment_id in self.moments
            and (shard is None or shard.holds(ask.contact_id))
        ][:limit]
