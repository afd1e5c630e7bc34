"""The partner registration area of the ledger: claims on company domains, their
expiry, and the conversions credited through them.

:class:`SqlPartnerStore` is the ledger's ``partners`` store. The rules are the domain's
(:mod:`domain.registration`); this module makes them hold under concurrency:

* **First to register wins, even in a race.** A claim is decided inside the
  transaction that writes it, against the registration holding the domain; the insert
  is ``ON CONFLICT DO NOTHING`` against the partial unique index of
  :mod:`integrations.ledger.tables` (one active or extended registration per
  domain). When two partners register one company at the same moment, the second
  insert waits for the first, finds the conflict, and the loser reads the winner back
  to report its owner and expiry. Claims of a batch are written in domain order, so
  two batches never wait on each other in a circle.
* **Expiry is a status change.** ``expire_due`` closes every holding registration
  whose expiry has passed, recording when and by whom; a claim arriving before the
  scheduled run closes the lapsed registration it replaces the same way.
* **Conversions go through the conversion rules.** An event without a referral code
  credited to a registering partner is placed by the same rule as coded ones (one
  conversion per referee and milestone, :mod:`domain.placement`, under the conversions
  lock) by :func:`tasks.use_cases.conversions.record_registered_conversions`, in the
  unit of work that marks the event examined, extends the registration (a qualified
  deal) or converts it (a won deal, :meth:`SqlPartnerStore.convert`).

No email address is written here: contacts are referenced by id or by hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, literal, or_, select, update
from sqlalchemy.engine import RowMapping

from domain.models import SourceEvent
from domain.program import RegistrationRules
from domain.registration import (
    CREDITED_EVENTS,
    HOLDING,
    Claim,
    ClaimDecision,
    Registration,
    RegistrationStatus,
    decide_claim,
)
from domain.stores.partners import RegisteredConversions, RegisteredCredit
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    event_from_row,
    not_indexed,
)
from integrations.ledger.tables import (
    T_ACCOUNTS,
    T_PARTNER_REGISTRATIONS,
    T_SOURCE_EVENTS,
    ReferralCodeRow,
    SourceCursorRow,
)

_HOLDING = [s.value for s in HOLDING]
# Registrations an event can still be credited through: a won deal closes one for good.
_CREDITABLE = [*_HOLDING, RegistrationStatus.EXPIRED.value]


__all__ = ["RegisteredConversions", "RegisteredCredit", "SqlPartnerStore"]


class SqlPartnerStore(LedgerBase):
    """Partner registrations on SQLAlchemy."""

    # -- reads ---------------------------------------------------------------------------

    def active_registration_for_domains(self, domains: Iterable[str]) -> dict[str, Registration]:
        """Domain -> the registration holding it (active or extended). It may have
        lapsed without the scheduled expiry having closed it yet: see
        :meth:`Registration.holds`."""
        wanted = sorted(set(domains))
        found: dict[str, Registration] = {}
        with self._connect() as conn:
            for chunk in chunks(wanted):
                for row in conn.execute(
                    select(T_PARTNER_REGISTRATIONS).where(
                        T_PARTNER_REGISTRATIONS.c.domain.in_(chunk),
                        not_indexed(T_PARTNER_REGISTRATIONS.c.status).in_(_HOLDING),
                    )
                ).mappings():
                    found[row["domain"]] = registration_from_row(row)
        return found

    def registrations(
        self,
        statuses: Sequence[RegistrationStatus] | None = None,
        expiring_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[Registration]:
        """Registrations, soonest expiry first, optionally only those of ``statuses``
        or expiring before a moment."""
        stmt = select(T_PARTNER_REGISTRATIONS).order_by(
            T_PARTNER_REGISTRATIONS.c.expires_at, T_PARTNER_REGISTRATIONS.c.registration_id
        )
        if statuses is not None:
            stmt = stmt.where(T_PARTNER_REGISTRATIONS.c.status.in_([s.value for s in statuses]))
        if expiring_before is not None:
            stmt = stmt.where(T_PARTNER_REGISTRATIONS.c.expires_at < expiring_before)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._connect() as conn:
            return [registration_from_row(r) for r in conn.execute(stmt).mappings()]

    def registration_counts(self) -> dict[str, int]:
        """Registrations per status (every status listed, zero included)."""
        counts = dict.fromkeys((s.value for s in RegistrationStatus), 0)
        with self._connect() as conn:
            for status, n in conn.execute(
                select(T_PARTNER_REGISTRATIONS.c.status, func.count()).group_by(
                    T_PARTNER_REGISTRATIONS.c.status
                )
            ):
                counts[status] = int(n)
        return counts

    def registered_events_to_convert(
        self, after_id: int, limit: int
    ) -> list[tuple[int, SourceEvent, Registration]]:
        """Signups and deals without a referral code, not yet examined, on an account
        whose domain a partner registered, that happened inside that registration's
        window; with the registration. Events with a code never appear here."""
        account_domain = T_ACCOUNTS.c.domain
        rows = (
            select(T_SOURCE_EVENTS, *[c.label(f"reg_{c.name}") for c in T_PARTNER_REGISTRATIONS.c])
            .join(T_ACCOUNTS, T_ACCOUNTS.c.account_id == T_SOURCE_EVENTS.c.account_id)
            .join(
                T_PARTNER_REGISTRATIONS,
                or_(
                    account_domain == T_PARTNER_REGISTRATIONS.c.domain,
                    account_domain == literal("www.") + T_PARTNER_REGISTRATIONS.c.domain,
                ),
            )
            .where(
                T_SOURCE_EVENTS.c.id > after_id,
                T_SOURCE_EVENTS.c.converted_at.is_(None),
                T_SOURCE_EVENTS.c.referral_code.is_(None),
                T_SOURCE_EVENTS.c.type.in_([t.value for t in CREDITED_EVENTS]),
                T_PARTNER_REGISTRATIONS.c.status.in_(_CREDITABLE),
                T_SOURCE_EVENTS.c.occurred_at >= T_PARTNER_REGISTRATIONS.c.registered_at,
                T_SOURCE_EVENTS.c.occurred_at < T_PARTNER_REGISTRATIONS.c.expires_at,
            )
            .order_by(T_SOURCE_EVENTS.c.id, T_PARTNER_REGISTRATIONS.c.registered_at)
            .limit(limit)
        )
        found: list[tuple[int, SourceEvent, Registration]] = []
        seen: set[int] = set()
        with self._connect() as conn:
            for row in conn.execute(rows).mappings():
                if row["id"] in seen:
                    continue
                seen.add(row["id"])
                registration = registration_from_row(
                    {c.name: row[f"reg_{c.name}"] for c in T_PARTNER_REGISTRATIONS.c}
                )
                found.append((row["id"], event_from_row(row), registration))
        return found

    # -- writes --------------------------------------------------------------------------

    def register(
        self,
        claims: Sequence[Claim],
        rules: RegistrationRules,
        now: datetime,
        new_codes: Mapping[str, str] | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> list[ClaimDecision]:
        """Decide and record ``claims`` in one transaction; first to register wins.

        A claim on a domain another partner holds is rejected with the owner and the
        expiry, including when that partner won a race by a moment; a lapsed holder is
        closed (``closed_by`` names the new claim) and the claim accepted. Two claims
        on one domain in the batch: the first listed wins. Replaying a batch with the
        same ``now`` (or claims carrying the same ``registered_at``) accepts the same
        registrations again and writes nothing new.

        Args:
            claims: normalized claims; every partner must be a known contact.
            rules: the program's registration rules.
            now: when the claims are made, timezone-aware; a claim that says when it
                was made (``registered_at``) is decided and timestamped at that moment.
            new_codes: partner id -> a freshly minted referral code, for partners
                without one (a code minted concurrently by another run wins): the
                conversions credited through a registration carry the partner's code.
            cursor: (source, cursor) of the read the claims came from, stored with
                them: a crash keeps both or neither.

        Returns:
            One decision per claim, in the order given.
        """
        decisions: dict[int, ClaimDecision] = {}
        # Domain order: two batches racing lock index entries in the same order.
        order = sorted(range(len(claims)), key=lambda i: (claims[i].domain, i))
        with self._begin() as conn:
            if new_codes:
                self._insert_ignore(
                    conn,
                    ReferralCodeRow,
                    [
                        {"code": code, "contact_id": partner, "created_at": now}
                        for partner, code in sorted(new_codes.items())
                    ],
                    ReferralCodeRow.code,
                )
            for i in order:
                decisions[i] = self._register_one(conn, claims[i], rules, now)
            if cursor is not None:
                self._upsert(
                    conn,
                    SourceCursorRow,
                    [{"source": cursor[0], "cursor": cursor[1], "updated_at": now}],
                    "source",
                )
        return [decisions[i] for i in range(len(claims))]

    def _register_one(
        self, conn: Connection, claim: Claim, rules: RegistrationRules, now: datetime
    ) -> ClaimDecision:
        made_at = claim.registered_at or now
        # A claim read again (its file or CRM record changed since) is the registration
        # it made, whatever became of it: accepted again, and nothing written.
        recorded = self._registration(
            conn, Registration.derive_id(claim.partner_id, claim.domain, made_at)
        )
        if recorded is not None:
            return ClaimDecision(claim, registration=recorded)
        holder = self._holder(conn, claim.domain)
        decision = decide_claim(holder, claim, now, rules)
        new = decision.registration
        if new is None or new == holder:
            return decision
        if decision.lapsed is not None:
            self._close(
                conn,
                [decision.lapsed.registration_id],
                RegistrationStatus.EXPIRED,
                f"claim:{new.registration_id}",
                now,
                lapsed_by=made_at,
            )
        inserted = self._insert_ignore(
            conn,
            T_PARTNER_REGISTRATIONS,
            [registration_row(new, now)],
            T_PARTNER_REGISTRATIONS.c.registration_id,
        )
        if inserted:
            return decision
        # Lost a race, or this very claim was recorded by an earlier run of the batch.
        same = (
            conn.execute(
                select(T_PARTNER_REGISTRATIONS).where(
                    T_PARTNER_REGISTRATIONS.c.registration_id == new.registration_id
                )
            )
            .mappings()
            .first()
        )
        if same is not None:
            return ClaimDecision(claim, registration=registration_from_row(same))
        winner = self._holder(conn, claim.domain)
        if winner is None:  # pragma: no cover - the conflict's row cannot vanish (no deletes)
            raise RuntimeError(f"registration of {claim.domain} conflicted with nothing")
        return ClaimDecision(claim, owner=winner.partner_id, owner_expires_at=winner.expires_at)

    def extend(self, extended: Registration, now: datetime) -> bool:
        """Record ``extended`` (from :func:`domain.registration.extended`), if the
        registration still holds its domain and its expiry only moves out.

        Returns:
            Whether the registration was extended.
        """
        with self._begin() as conn:
            return self._extend(conn, extended, now)

    def _extend(self, conn: Connection, extended: Registration, now: datetime) -> bool:
        return bool(
            conn.execute(
                update(T_PARTNER_REGISTRATIONS)
                .where(
                    T_PARTNER_REGISTRATIONS.c.registration_id == extended.registration_id,
                    T_PARTNER_REGISTRATIONS.c.status.in_(_HOLDING),
                    T_PARTNER_REGISTRATIONS.c.expires_at > now,
                    T_PARTNER_REGISTRATIONS.c.expires_at < extended.expires_at,
                )
                .values(
                    expires_at=extended.expires_at,
                    extensions=extended.extensions,
                    status=RegistrationStatus.EXTENDED.value,
                    updated_at=now,
                )
            ).rowcount
        )

    def expire_due(self, now: datetime, by: str = "expire-registrations") -> list[Registration]:
        """Close every active or extended registration whose expiry is at or before
        ``now``: status ``expired``, with when and by whom. Running it again, or two
        runs at once, expire each registration once.

        Returns:
            The registrations this call expired, soonest expiry first.
        """
        with self._begin() as conn:
            due = list(
                conn.execute(
                    select(T_PARTNER_REGISTRATIONS.c.registration_id)
                    .where(
                        T_PARTNER_REGISTRATIONS.c.status.in_(_HOLDING),
                        T_PARTNER_REGISTRATIONS.c.expires_at <= now,
                    )
                    .order_by(T_PARTNER_REGISTRATIONS.c.registration_id)
                ).scalars()
            )
            expired = self._close(conn, due, RegistrationStatus.EXPIRED, by, now, lapsed_by=now)
            if not expired:
                return []
            rows: list[Registration] = []
            for chunk in chunks(sorted(expired)):
                rows += [
                    registration_from_row(r)
                    for r in conn.execute(
                        select(T_PARTNER_REGISTRATIONS).where(
                            T_PARTNER_REGISTRATIONS.c.registration_id.in_(chunk)
                        )
                    ).mappings()
                ]
        return sorted(rows, key=lambda r: (r.expires_at, r.registration_id))

    def convert(self, registration_id: str, conversion_id: str, now: datetime) -> int:
        """Mark a registration converted by ``conversion_id``: a creditable one (holding,
        or expired after the deal happened inside its window) not converted yet.

        Returns:
            1 if this call converted it, else 0.
        """
        with self._begin() as conn:
            return self._convert(conn, registration_id, conversion_id, now)

    # -- helpers -------------------------------------------------------------------------

    def _registration(self, conn: Connection, registration_id: str) -> Registration | None:
        row = (
            conn.execute(
                select(T_PARTNER_REGISTRATIONS).where(
                    T_PARTNER_REGISTRATIONS.c.registration_id == registration_id
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else registration_from_row(row)

    def _holder(self, conn: Connection, domain: str) -> Registration | None:
        row = (
            conn.execute(
                select(T_PARTNER_REGISTRATIONS).where(
                    T_PARTNER_REGISTRATIONS.c.domain == domain,
                    not_indexed(T_PARTNER_REGISTRATIONS.c.status).in_(_HOLDING),
                )
            )
            .mappings()
            .first()
        )
        return None if row is None else registration_from_row(row)

    def _close(
        self,
        conn: Connection,
        registration_ids: Sequence[str],
        status: RegistrationStatus,
        by: str,
        now: datetime,
        lapsed_by: datetime,
    ) -> list[str]:
        """Close the holding registrations among ``registration_ids`` whose expiry is
        at or before ``lapsed_by``; the ids closed (a racing closer gets the others)."""
        closed: list[str] = []
        for chunk in chunks(sorted(set(registration_ids))):
            stmt = (
                update(T_PARTNER_REGISTRATIONS)
                .where(
                    T_PARTNER_REGISTRATIONS.c.registration_id.in_(chunk),
                    T_PARTNER_REGISTRATIONS.c.status.in_(_HOLDING),
                    T_PARTNER_REGISTRATIONS.c.expires_at <= lapsed_by,
                )
                .values(status=status.value, closed_at=now, closed_by=by[:128], updated_at=now)
                .returning(T_PARTNER_REGISTRATIONS.c.registration_id)
            )
            closed += list(conn.execute(stmt).scalars())
        return closed

    def _convert(
        self, conn: Connection, registration_id: str, conversion_id: str, now: datetime
    ) -> int:
        return int(
            conn.execute(
                update(T_PARTNER_REGISTRATIONS)
                .where(
                    T_PARTNER_REGISTRATIONS.c.registration_id == registration_id,
                    T_PARTNER_REGISTRATIONS.c.status.in_(_CREDITABLE),
                    T_PARTNER_REGISTRATIONS.c.conversion_id.is_(None),
                )
                .values(
                    status=RegistrationStatus.CONVERTED.value,
                    conversion_id=conversion_id,
                    closed_at=now,
                    closed_by=f"conversion:{conversion_id}",
                    updated_at=now,
                )
            ).rowcount
        )


# -- row mapping -------------------------------------------------------------------------


def registration_row(r: Registration, now: datetime) -> dict[str, Any]:
    return {
        "registration_id": r.registration_id,
        "partner_id": r.partner_id,
        "domain": r.domain,
        "contact_ref": r.contact_ref,
        "evidence": r.evidence,
        "registered_at": r.registered_at,
        "expires_at": r.expires_at,
        "status": r.status.value,
        "extensions": r.extensions,
        "closed_at": r.closed_at,
        "closed_by": r.closed_by,
        "conversion_id": r.conversion_id,
        "updated_at": now,
    }


def registration_from_row(r: RowMapping | Mapping[str, Any]) -> Registration:
    return Registration(
        registration_id=r["registration_id"],
        partner_id=r["partner_id"],
        domain=r["domain"],
        contact_ref=r["contact_ref"],
        evidence=r["evidence"],
        registered_at=r["registered_at"],
        expires_at=r["expires_at"],
        status=RegistrationStatus(r["status"]),
        extensions=r["extensions"],
        closed_at=r["closed_at"],
        closed_by=r["closed_by"],
        conversion_id=r["conversion_id"],
    )
