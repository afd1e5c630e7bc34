"""Who may release money: registered approvers, their identity, and the decision rules.

An approver is a record in the ledger (an id, a display name, a work email, optionally
a CRM contact, a per-decision limit), never a name typed into a form. A decision counts
only when the approver is registered and active, proves who they are with a one-time
code, stays within their limit, and is not party to the reward: compared by identity
(contact ids, normalised email addresses, accounts), never by name, since a name can be
spelled in many ways ("Maya  Chen", "M. Chen", a no-break space) and proves nothing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from domain.money import Money

APPROVER_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
# A one-time code is six ASCII digits (RFC 6238's default, what authenticator apps show).
CODE = re.compile(r"^[0-9]{6}$")
# Wrong codes an approver may enter before their codes are refused for a while: a
# six-digit code guessed at API speed would otherwise fall within hours.
MAX_FAILED_CODES = 5
LOCKOUT = timedelta(minutes=15)


class ApproverAction(StrEnum):
    """What an entry of the approvers' change log records."""

    ADDED = "added"
    ENROLLED = "enrolled"
    DISABLED = "disabled"
    ENABLED = "enabled"


class CodeCheck(StrEnum):
    """What verifying a one-time code found."""

    OK = "ok"
    WRONG = "wrong"
    REPLAYED = "replayed"
    NOT_ENROLLED = "not_enrolled"


@dataclass(frozen=True, slots=True)
class Identity:
    """Everything that identifies a person here: never their name."""

    contact_ids: frozenset[str] = field(default_factory=frozenset)
    emails: frozenset[str] = field(default_factory=frozenset)
    accounts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        contact_ids: Iterable[str | None] = (),
        emails: Iterable[str | None] = (),
        accounts: Iterable[str | None] = (),
    ) -> Identity:
        """An identity from whatever is known; blanks and malformed addresses drop out."""
        normalised = set()
        for email in emails:
            if email:
                try:
                    normalised.add(normalise_email(email))
                except ValueError:
                    continue
        return cls(
            frozenset(c.strip() for c in contact_ids if c and c.strip()),
            frozenset(normalised),
            frozenset(a.strip() for a in accounts if a and a.strip()),
        )

    def shared_with(self, other: Identity) -> str | None:
        """What this identity has in common with ``other`` ("contact", "email",
        "account"), or None."""
        if self.contact_ids & other.contact_ids:
            return "contact"
        if self.emails & other.emails:
            return "email"
        if self.accounts & other.accounts:
            return "account"
        return None


def party_identities(
    approver: Approver,
    parties: Mapping[str, str | None],
    contacts: Mapping[str, tuple[str | None, str | None]],
) -> tuple[Identity, dict[str, Identity]]:
    """The approver's identity and each party's (role -> contact id).

    Args:
        approver: who decides; their registered email counts beside their CRM contact's.
        parties: the people party to the reward, by role, as CRM contact ids.
        contacts: what the CRM says of those contacts: contact id -> (email, account id).
    """

    def of(contact_id: str | None, *emails: str | None) -> Identity:
        email, account = contacts.get(contact_id, (None, None)) if contact_id else (None, None)
        return Identity.of([contact_id], [*emails, email], [account])

    return of(approver.contact_id, approver.email), {
        role: of(contact_id) for role, contact_id in parties.items()
    }


@dataclass(frozen=True, slots=True)
class Approver:
    """A person allowed to decide on rewards, as registered.

    Attributes:
        approver_id: the id they decide under (lowercase letters, digits, ``.-_``).
        display_name: shown in the UI and the ledger; never compared.
        email: their work email, normalised (see :func:`normalise_email`).
        contact_id: their CRM contact, when they have one (their account is read from it).
        limit: the largest amount one decision of theirs may release.
        active: a disabled approver decides nothing.
        demo: made by the demo, whose codes the command line may show; never in production.
        enrolled: whether a one-time-code secret is enrolled.
    """

    approver_id: str
    display_name: str
    email: str
    contact_id: str | None
    limit: Money
    active: bool = True
    demo: bool = False
    enrolled: bool = False


def normalise_approver_id(raw: str) -> str:
    """The id as stored: ASCII, lowercase.

    Raises:
        ValueError: not of the form of an approver id.
    """
    candidate = raw.strip().lower()
    if not APPROVER_ID.fullmatch(candidate):
        raise ValueError(
            "an approver id is 2-64 of a-z, 0-9, '.', '-', '_', starting with a letter or digit"
        )
    return candidate


def normalise_email(raw: str) -> str:
    """One spelling per mailbox: Unicode NFKC, no surrounding space, case folded, and
    the ``+tag`` of the local part dropped (``Maya+x@Corp.com`` is ``maya@corp.com``).

    Raises:
        ValueError: not exactly one ``@``, an empty side, white space inside, or a
            domain without a dot.
    """
    text = unicodedata.normalize("NFKC", raw).strip().casefold()
    if text.count("@") != 1 or any(ch.isspace() for ch in text):
        raise ValueError("an email address has one @ and no spaces")
    local, domain = text.split("@")
    local = local.split("+", 1)[0]
    if not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        raise ValueError("an email address needs a name and a domain like example.com")
    return f"{local}@{domain}"


def locked_out(failed_codes: int) -> bool:
    """Whether an approver with this many wrong codes within :data:`LOCKOUT` must wait."""
    return failed_codes >= MAX_FAILED_CODES


def lockout_since(now: datetime) -> datetime:
    """The start of the window whose wrong codes count towards a lockout."""
    return now - LOCKOUT


def make_approver(
    *,
    approver_id: str,
    display_name: str,
    email: str,
    contact_id: str | None,
    limit: Money,
    demo: bool = False,
) -> Approver:
    """A new approver from what an operator typed, validated field by field.

    Raises:
        ValueError: naming the field that is wrong.
    """
    try:
        ident = normalise_approver_id(approver_id)
    except ValueError as exc:
        raise ValueError(f"id: {exc}") from None
    name = " ".join(unicodedata.normalize("NFKC", display_name).split())
    if not name or len(name) > 200 or not name.isprintable():
        raise ValueError("name: 1-200 printable characters")
    try:
        mailbox = normalise_email(email)
    except ValueError as exc:
        raise ValueError(f"email: {exc}") from None
    contact = contact_id.strip() if contact_id else None
    if contact is not None and not (0 < len(contact) <= 128 and contact.isprintable()):
        raise ValueError("contact id: 1-128 printable characters")
    if limit.amount_minor <= 0:
        raise ValueError("limit: must be above zero")
    return Approver(ident, name, mailbox, contact, limit, active=True, demo=demo)
