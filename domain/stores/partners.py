"""The ``partners`` store: partner registrations of company domains."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from domain.models import Conversion, SourceEvent
from domain.program import RegistrationRules
from domain.registration import Claim, ClaimDecision, Registration, RegistrationStatus


@dataclass(frozen=True, slots=True)
class RegisteredCredit:
    """An event credited to a registering partner: its conversion, and the
    registration it came through."""

    conversion: Conversion
    registration_id: str


@dataclass(frozen=True, slots=True)
class RegisteredConversions:
    """What one batch of registered-lead conversions did to the ledger.

    Attributes:
        new: conversion ids inserted.
        duplicates: the referee was already converted at that milestone by the code.
        quarantined: rejects written (another code converted the referee first, an
            amount in another currency, a partner with no referral code).
        notices: notifications queued for the new conversions.
        extended: registrations whose expiry a qualified deal pushed out.
        converted: registrations a won deal converted.
        events_marked: events marked examined (a rerun marks none).
    """

    new: tuple[str, ...] = ()
    duplicates: int = 0
    quarantined: int = 0
    notices: int = 0
    extended: int = 0
    converted: int = 0
    events_marked: int = 0


class PartnerStore(Protocol):
    """Registrations: first to register wins; expiry, extension and conversion."""

    def active_registration_for_domains(self, domains: Iterable[str]) -> dict[str, Registration]:
        """Domain -> the registration holding it (active or extended)."""
        ...

    def registrations(
        self,
        statuses: Sequence[RegistrationStatus] | None = None,
        expiring_before: datetime | None = None,
        limit: int | None = None,
    ) -> list[Registration]:
        """Registrations, soonest expiry first, optionally only those of ``statuses``
        or expiring before a moment."""
        ...

    def registration_counts(self) -> dict[str, int]:
        """Registrations per status (every status listed, zero included)."""
        ...

    def registered_events_to_convert(
        self, after_id: int, limit: int
    ) -> list[tuple[int, SourceEvent, Registration]]:
        """Uncoded signups and deals not examined yet, inside a registration's window on
        the account's domain; each with that registration."""
        ...

    def register(
        self,
        claims: Sequence[Claim],
        rules: RegistrationRules,
        now: datetime,
        new_codes: Mapping[str, str] | None = None,
        cursor: tuple[str, str] | None = None,
    ) -> list[ClaimDecision]:
        """Decide and record ``claims`` in one transaction; first to register wins.

        Args:
            claims: normalized claims; every partner must be a known contact.
            rules: the program's registration rules.
            now: when the claims are made, timezone-aware.
            new_codes: partner id -> a freshly minted referral code, for partners
                without one.
            cursor: (source, cursor) of the read the claims came from, stored with them.

        Returns:
            One decision per claim, in the order given.
        """
        ...

    def extend(self, extended: Registration, now: datetime) -> bool:
        """Record ``extended`` if the registration still holds its domain and its
        expiry only moves out; whether it was extended."""
        ...

    def expire_due(self, now: datetime, by: str = "expire-registrations") -> list[Registration]:
        """Close every holding registration whose expiry is at or before ``now``;
        the registrations this call expired, soonest expiry first."""
        ...

    def convert(self, registration_id: str, conversion_id: str, now: datetime) -> int:
        """Mark a registration converted by ``conversion_id`` (once); 1 if it was."""
        ...
