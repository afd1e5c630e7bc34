"""The ``partners`` store in memory: registrations as a dict, decided by the domain."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from domain.models import SourceEvent
from domain.program import RegistrationRules
from domain.registration import (
    HOLDING,
    Claim,
    ClaimDecision,
    Registration,
    RegistrationStatus,
    decide_claim,
)

_CREDITABLE = (*HOLDING, RegistrationStatus.EXPIRED)


class InMemoryPartnerStore:
    """A :class:`domain.stores.partners.PartnerStore` over a dict, recording calls.

    Claims are decided by :func:`domain.registration.decide_claim` as the SQL store
    decides them (no race to lose here). ``credited`` stands for the join of events,
    accounts and registrations: the (event id, event, registration id) triples
    :meth:`registered_events_to_convert` hands out while their event is not examined.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, Registration] = {}
        self.codes: dict[str, str] = {}
        self.cursors: dict[str, str] = {}
        self.credited: list[tuple[int, SourceEvent, str]] = []
        self.examined: set[int] = set()
        self.calls: list[tuple[str, Any]] = []

    def active_registration_for_domains(self, domains: Iterable[str]) -> dict[str, Registration]:
        wanted = set(domains)
        return {
            r.domain: r for r in self.by_id.values() if r.domain in wanted and r.status in HOLDING
        }

    def registrations(
        self,
        statuses: Sequence[RegistrationStatus] | None = None,
        expiring_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[Registration]:
        found = sorted(
            (
                r
                for r in self.by_id.values()
                if (statuses is None or r.status in statuses)
                and (expiring_before is None or r.expires_at < expiring_before)
            ),
            key=lambda r: (r.expires_at, r.registration_id),
        )
        return found if limit is None else found[:limit]

    def registration_counts(self) -> dict[str, int]:
        counts = dict.fromkeys((s.value for s in RegistrationStatus), 0)
        for r in self.by_id.values():
            counts[r.status.value] += 1
        return counts

    def registered_events_to_convert(
        self, after_id: int, limit: int
    ) -> list[tuple[int, SourceEvent, Registration]]:
        found = [
            (i, e, self.by_id[rid])
            for i, e, rid in sorted(self.credited, key=lambda t: t[0])
            if i > after_id
            and i not in self.examined
            and self.by_id[rid].status in _CREDITABLE
            and self.by_id[rid].registered_at <= e.occurred_at < self.by_id[rid].expires_at
        ]
        return found[:limit]

    def register(
        self,
        claims: Sequence[Claim],
        rules: RegistrationRules,
        now: datetime,
        new_codes: Mapping[str, str] | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> list[ClaimDecision]:
        self.calls.append(("register", [c.domain for c in claims]))
        for partner, code in sorted((new_codes or {}).items()):
            self.codes.setdefault(partner, code)
        decisions: dict[int, ClaimDecision] = {}
        for i in sorted(range(len(claims)), key=lambda i: (claims[i].domain, i)):
            decisions[i] = self._register_one(claims[i], rules, now)
        if cursor is not None:
            self.cursors[cursor[0]] = cursor[1]
        return [decisions[i] for i in range(len(claims))]

    def _register_one(self, claim: Claim, rules: RegistrationRules, now: datetime) -> ClaimDecision:
        made_at = claim.registered_at or now
        recorded = self.by_id.get(Registration.derive_id(claim.partner_id, claim.domain, made_at))
        if recorded is not None:
            return ClaimDecision(claim, registration=recorded)
        holder = self._holder(claim.domain)
        decision = decide_claim(holder, claim, now, rules)
        new = decision.registration
        if new is None or new == holder:
            return decision
        lapsed = decision.lapsed
        if lapsed is not None and lapsed.expires_at <= made_at:
            self.by_id[lapsed.registration_id] = replace(
                lapsed,
                status=RegistrationStatus.EXPIRED,
                closed_at=now,
                closed_by=f"claim:{new.registration_id}",
            )
        self.by_id[new.registration_id] = new
        return decision

    def _holder(self, domain: str) -> Registration | None:
        return next(
            (r for r in self.by_id.values() if r.domain == domain and r.status in HOLDING), None
        )

    def extend(self, extended: Registration, now: datetime) -> bool:
        self.calls.append(("extend", extended.registration_id))
        current = self.by_id.get(extended.registration_id)
        if (
            current is None
            or current.status not in HOLDING
            or not now < current.expires_at < extended.expires_at
        ):
            return False
        self.by_id[current.registration_id] = replace(
            current,
            expires_at=extended.expires_at,
            extensions=extended.extensions,
            status=RegistrationStatus.EXTENDED,
        )
        return True

    def expire_due(self, now: datetime, by: str = "expire-registrations") -> list[Registration]:
        self.calls.append(("expire_due", by))
        expired: list[Registration] = []
        for rid in sorted(self.by_id):
            r = self.by_id[rid]
            if r.status in HOLDING and r.expires_at <= now:
                closed = replace(
                    r, status=RegistrationStatus.EXPIRED, closed_at=now, closed_by=by[:128]
                )
                self.by_id[rid] = closed
                expired.append(closed)
        return sorted(expired, key=lambda r: (r.expires_at, r.registration_id))

    def convert(self, registration_id: str, conversion_id: str, now: datetime) -> int:
        self.calls.append(("convert", (registration_id, conversion_id)))
        r = self.by_id.get(registration_id)
        if r is None or r.status not in _CREDITABLE or r.conversion_id is not None:
            return 0
        self.by_id[registration_id] = replace(
            r,
            status=RegistrationStatus.CONVERTED,
            conversion_id=conversion_id,
            closed_at=now,
            closed_by=f"conversion:{conversion_id}",
        )
        return 1
