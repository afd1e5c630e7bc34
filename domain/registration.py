"""Partner deal registration: who holds the claim on a company, and until when.

A partner registers a lead early: the company's domain, a contact, and the evidence
that the lead is qualified (a meeting booked, a discovery call, a budget talk), not
just a name. The claim is timestamped and locked for the program's window
(``registration.window_days``). The first partner to register a domain wins; a second
claim while the first one holds is refused, naming the owner and the expiry. A claim
that lapsed (its expiry passed, whether or not the scheduled expiry has run yet) no
longer holds: the next claim on the domain is accepted.

When the deal progresses (a qualified deal on the domain), the claim is extended by
``extension_days``, never past ``max_total_days`` after it was made. A deal or signup
carrying no referral code, on an account whose domain a partner registered, is
credited to that partner as if it carried the partner's code; the won deal converts the
registration.

Contacts are referenced by an id or by a keyed hash (HMAC-SHA256, under the program's
secret contact key) of their address, never by the address itself, and addresses typed
into the evidence are masked, so no email is ever stored with a registration. The hash
is keyed so that a leaked table cannot be matched against a list of addresses; without
a key an address is refused (give the CRM contact id). Rows written before the hash was
keyed hold ``sha256:<hex>`` (:data:`LEGACY_EMAIL_HASH_PREFIX`): they are kept as they
are, and nothing compares an address with them (an address always hashes to
``hmac-sha256:<hex>``).

A claim made elsewhere and read later (a file drop, the CRM) carries the moment it was
made; it is decided at that moment, against the registrations on record.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from domain.attribution import conversion_from_event
from domain.errors import InputRejected
from domain.fraud import FREE_MAIL_DOMAINS
from domain.models import Contact, Conversion, EventType, SourceEvent, derived_id
from domain.program import RegistrationRules


class RegistrationStatus(StrEnum):
    ACTIVE = "active"
    EXTENDED = "extended"
    EXPIRED = "expired"
    CONVERTED = "converted"


# The statuses that hold the lock on a domain (the ledger's unique index covers these).
HOLDING = (RegistrationStatus.ACTIVE, RegistrationStatus.EXTENDED)
# Events that may be credited through a registration, and the one that extends it.
CREDITED_EVENTS = (EventType.SIGNUP, EventType.DEAL_QUALIFIED, EventType.DEAL_WON)
PROGRESS_EVENT = EventType.DEAL_QUALIFIED
CONVERTING_EVENT = EventType.DEAL_WON

MAX_EVIDENCE_CHARS = 2000
MIN_EVIDENCE_CHARS = 10
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN_RE = re.compile(rf"^(?:{_LABEL}\.)+(?:[a-z]{{2,63}}|xn--[a-z0-9-]{{1,59}})$")
_CONTACT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_EMAIL_IN_TEXT = re.compile(r"[^@\s<>()\[\],;:\"']+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PARTNER_ID_RE = re.compile(r"^\S{1,128}$")
EMAIL_HASH_PREFIX = "hmac-sha256:"
# Unkeyed SHA-256 of an address: what registrations held before the hash was keyed.
LEGACY_EMAIL_HASH_PREFIX = "sha256:"
NO_KEY_REASON = (
    "an email address is kept only as a keyed hash and no contact hash key is "
    "configured: give the CRM contact id instead"
)


@dataclass(frozen=True, slots=True)
class Claim:
    """A partner's request to register a company, already normalized and checked.

    ``registered_at`` is when the claim was made, for a claim read after the fact (a
    file drop, a CRM property); ``None``: it is made as it is decided.
    """

    partner_id: str
    domain: str
    contact_ref: str
    evidence: str
    registered_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Registration:
    """A partner's claim on a company domain, as the ledger keeps it."""

    registration_id: str
    partner_id: str
    domain: str
    contact_ref: str
    evidence: str
    registered_at: datetime
    expires_at: datetime
    status: RegistrationStatus = RegistrationStatus.ACTIVE
    extensions: int = 0
    closed_at: datetime | None = None
    closed_by: str | None = None
    conversion_id: str | None = None

    @staticmethod
    def derive_id(partner_id: str, domain: str, registered_at: datetime) -> str:
        """The same claim made at the same moment (a re-run) gets the same id; the same
        partner registering the domain again after it lapsed gets a new one."""
        return derived_id("registration", partner_id, domain, registered_at.isoformat())

    def holds(self, now: datetime) -> bool:
        """Whether this claim still locks its domain at ``now``."""
        return self.status in HOLDING and now < self.expires_at

    def covers(self, at: datetime) -> bool:
        """Whether something that happened ``at`` falls inside the protected window.

        A converted registration covers nothing more: its deal was won.
        """
        return (
            self.status is not RegistrationStatus.CONVERTED
            and self.registered_at <= at < self.expires_at
        )


@dataclass(frozen=True, slots=True)
class ClaimDecision:
    """What became of a claim: accepted (``registration`` is the new claim), or
    rejected because ``owner`` holds the domain until ``owner_expires_at``.

    ``lapsed`` is the earlier claim whose expiry has passed but which the scheduled
    expiry has not closed yet; accepting the new claim closes it.
    """

    claim: Claim
    registration: Registration | None = None
    owner: str | None = None
    owner_expires_at: datetime | None = None
    lapsed: Registration | None = None

    @property
    def accepted(self) -> bool:
        return self.registration is not None

    def message(self) -> str:
        """One line for people: ``accepted: ...`` or ``rejected: <domain> is registered
        by <partner> until <date>``."""
        if self.registration is not None:
            r = self.registration
            return (
                f"accepted: {r.domain} is registered by {r.partner_id} "
                f"until {r.expires_at:%Y-%m-%d} ({r.registration_id})"
            )
        assert self.owner_expires_at is not None
        return (
            f"rejected: {self.claim.domain} is registered by {self.owner} "
            f"until {self.owner_expires_at:%Y-%m-%d}"
        )


def normalize_domain(text: str | None, record: str = "claim", field: str = "domain") -> str:
    """A company's domain in canonical form: ``https://www.Acme.com/`` -> ``acme.com``.

    Raises:
        InputRejected: empty, an email address, malformed, or a free mailbox provider
            (``gmail.com`` is nobody's company), naming ``field``.
    """
    value = (text or "").strip().lower()
    if not value:
        raise InputRejected(record, field, "missing")
    if "@" in value:
        raise InputRejected(record, field, "give the company's domain, not an email address")
    value = re.sub(r"^[a-z][a-z0-9+.-]*://", "", value)
    value = re.split(r"[/?#]", value, maxsplit=1)[0]
    value = value.rstrip(".")
    if ":" in value:
        value = value.split(":", 1)[0]
    value = value.removeprefix("www.")
    if len(value) > 253 or not _DOMAIN_RE.match(value):
        raise InputRejected(record, field, "not a valid company domain (e.g. acme.com)")
    if value in FREE_MAIL_DOMAINS:
        raise InputRejected(
            record, field, f"{value} is a free mailbox provider, not a company domain"
        )
    return value


def email_reference(address: str, key: bytes) -> str:
    """``hmac-sha256:<hex>`` of the trimmed, lowercased ``address`` under ``key``: the
    only form an address is stored or compared in."""
    normalized = address.strip().lower().encode("utf-8")
    return EMAIL_HASH_PREFIX + hmac.new(key, normalized, hashlib.sha256).hexdigest()


def contact_reference(
    text: str | None,
    record: str = "claim",
    field: str = "contact",
    key: bytes | None = None,
) -> str:
    """The lead's contact as stored: a CRM contact id as given, or an email address
    as its keyed hash (:func:`email_reference`; the address itself is never kept).

    Raises:
        InputRejected: missing, neither a plausible id nor an email address, or an
            address while no ``key`` is given.
    """
    value = (text or "").strip()
    if not value:
        raise InputRejected(record, field, "missing")
    if "@" in value:
        if not _EMAIL_RE.match(value):
            raise InputRejected(record, field, "not a valid email address")
        if not key:
            raise InputRejected(record, field, NO_KEY_REASON)
        return email_reference(value, key)
    if not _CONTACT_ID_RE.match(value):
        raise InputRejected(
            record, field, "a contact id (letters, digits, _ . : -) or an email address"
        )
    return value


def clean_evidence(text: str | None, record: str = "claim", field: str = "evidence") -> str:
    """The qualification evidence, with email addresses masked.

    Raises:
        InputRejected: missing or too short to be evidence of anything, or too long.
    """
    value = " ".join((text or "").split())
    if len(value) < MIN_EVIDENCE_CHARS:
        raise InputRejected(
            record,
            field,
            "describe the qualification (a meeting booked, a discovery call, a budget "
            f"conversation) in at least {MIN_EVIDENCE_CHARS} characters",
        )
    if len(value) > MAX_EVIDENCE_CHARS:
        raise InputRejected(record, field, f"longer than {MAX_EVIDENCE_CHARS} characters")
    return _EMAIL_IN_TEXT.sub("[email]", value)


def parse_claim(
    record: str,
    partner_id: str | None,
    domain: str | None,
    contact: str | None,
    evidence: str | None,
    *,
    key: bytes | None = None,
    registered_at: datetime | None = None,
    now: datetime | None = None,
) -> Claim:
    """A claim from what a partner typed or a batch row holds.

    Args:
        record: where the claim came from, named in a refusal.
        partner_id, domain, contact, evidence: the claim's fields as given.
        key: the contact hash key (an email contact needs it).
        registered_at: when the claim was made, if before it is read.
        now: the moment it is read: a claim cannot have been made after it.

    Raises:
        InputRejected: the first wrong field, by name.
    """
    partner = (partner_id or "").strip()
    if not partner:
        raise InputRejected(record, "partner_id", "missing")
    if not _PARTNER_ID_RE.match(partner):
        raise InputRejected(record, "partner_id", "not a contact id")
    if registered_at is not None:
        if registered_at.tzinfo is None:
            raise InputRejected(record, "registered_at", "timestamp has no time zone")
        if now is not None and registered_at > now:
            raise InputRejected(
                record, "registered_at", f"{registered_at.isoformat()} is in the future"
            )
    return Claim(
        partner_id=partner,
        domain=normalize_domain(domain, record),
        contact_ref=contact_reference(contact, record, key=key),
        evidence=clean_evidence(evidence, record),
        registered_at=registered_at,
    )


def decide_claim(
    existing_active: Registration | None,
    claim: Claim,
    now: datetime,
    rules: RegistrationRules,
) -> ClaimDecision:
    """First to register wins.

    Args:
        existing_active: the registration holding ``claim.domain`` in the ledger (status
            active or extended), if any; it may have lapsed without being expired yet.
        claim: the new claim.
        now: when the claim is decided; the registration is timestamped with it,
            unless the claim says when it was made (``claim.registered_at``): then it
            is decided, and timestamped, at that moment.
        rules: the program's registration rules.

    Returns:
        Accepted, with the new registration locked for ``rules.window_days``; or
        rejected, naming the partner holding the domain and until when.
    """
    if existing_active is not None and existing_active.domain != claim.domain:
        raise ValueError("the existing registration is for another domain")
    now = claim.registered_at or now
    registration_id = Registration.derive_id(claim.partner_id, claim.domain, now)
    if existing_active is not None and existing_active.registration_id == registration_id:
        # The same claim at the same moment, replayed (a retried batch): the same answer.
        return ClaimDecision(claim, registration=existing_active)
    if existing_active is not None and existing_active.holds(now):
        return ClaimDecision(
            claim, owner=existing_active.partner_id, owner_expires_at=existing_active.expires_at
        )
    registration = Registration(
        registration_id=registration_id,
        partner_id=claim.partner_id,
        domain=claim.domain,
        contact_ref=claim.contact_ref,
        evidence=claim.evidence,
        registered_at=now,
        expires_at=now + timedelta(days=rules.window_days),
    )
    return ClaimDecision(claim, registration=registration, lapsed=existing_active)


def extended(registration: Registration, rules: RegistrationRules) -> Registration | None:
    """The registration after one sign of progress: expiry pushed out by
    ``extension_days``, never past ``max_total_days`` after it was made.

    Returns:
        The extended registration, or ``None`` when it is already at its limit (or no
        longer holds a lock to extend).
    """
    if registration.status not in HOLDING:
        return None
    limit = registration.registered_at + timedelta(days=rules.max_total_days)
    new_expiry = min(registration.expires_at + timedelta(days=rules.extension_days), limit)
    if new_expiry <= registration.expires_at:
        return None
    return replace(
        registration,
        expires_at=new_expiry,
        status=RegistrationStatus.EXTENDED,
        extensions=registration.extensions + 1,
    )


def registered_conversion(
    event: SourceEvent,
    registration: Registration,
    partner: Contact,
    partner_code: str,
    currency: str,
) -> Conversion | None:
    """The conversion an event with no referral code stands for when its company is
    registered: credited to the registering partner, as if the event carried the
    partner's code. ``None`` when the event is not a signup or deal, carries a code
    of its own (that code decides, as always), or happened outside the registration's
    window.

    Raises:
        InputRejected: the amount is in another currency than the program's, or is
            negative (as for coded events).
    """
    if event.referral_code is not None or event.type not in CREDITED_EVENTS:
        return None
    if partner.contact_id != registration.partner_id or not registration.covers(event.occurred_at):
        return None
    owners: Mapping[str, Contact] = {partner_code: partner}
    return conversion_from_event(replace(event, referral_code=partner_code), owners, currency)
