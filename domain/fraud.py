"""Fraud and quality checks on a conversion before its reward is routed.

A flag never blocks a reward by itself: it sends the reward to a person, with the flags
shown, instead of paying it automatically. The flags:

* ``self_referral:same_contact`` / ``same_account``: the referee is the referrer, or on
  the referrer's CRM account;
* ``self_referral:same_email_domain``: the referee's address is on the referrer's company
  domain (free mailbox providers excepted);
* ``self_referral:same_email``: the referee's address is the referrer's, once normalized
  (case, ``+tags``, and the dots Gmail ignores);
* ``self_referral:same_stripe_customer``: the referee paid as the referrer's Stripe
  customer;
* ``self_referral:same_card``: the referee paid with a card the referrer paid with
  (Stripe's card fingerprint, when known);
* ``disposable_email_domain``: a throwaway mailbox;
* ``velocity:over_<n>_per_<h>h``: more than ``n`` conversions credited to one referrer
  within ``h`` hours (this one and the ones before it);
* ``referral_cycle``: the referrer was, directly or through a chain, referred by this
  referee.
* ``self_referral:own_clicks``: every person's click on the code's tracked link up to the
  conversion came from a browser the referrer opened their own page in (and there was
  at least one): the referrer followed their own link, and nobody else's click led
  there (:func:`only_own_clicks`).
* ``payout_destination_changed``: the referrer's payout destination (Stripe connected
  account or customer id) changed since a person last approved one of their rewards
  (:func:`destination_changes` finds the changes; the ledger adds the flag when it
  routes the reward, whatever its amount).

Flags are fixed words and numbers: never an address, a name or a fingerprint. Email
addresses are compared normalized, in memory, and never kept.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.models import Contact, Conversion
from domain.program import Fraud

# Free mailbox providers: two people sharing one of these share nothing else.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "yahoo.com",
        "icloud.com",
        "me.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "yahoo.fr",
    }
)
DISPOSABLE_DOMAINS = frozenset(
    {
        "mailinator.com",
        "guerrillamail.com",
        "10minutemail.com",
        "tempmail.com",
        "trashmail.com",
        "yopmail.com",
        "sharklasers.com",
        "getnada.com",
        "dispostable.com",
        "maildrop.cc",
        "throwawaymail.com",
        "temp-mail.org",
    }
)


def email_domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def flags_for(conversion: Conversion, referrer: Contact) -> tuple[str, ...]:
    """The fraud flags of ``conversion`` credited to ``referrer``, sorted."""
    flags: set[str] = set()
    if conversion.referee_contact_id and conversion.referee_contact_id == referrer.contact_id:
        flags.add("self_referral:same_contact")
    if (
        conversion.referee_account_id
        and referrer.account_id
        and conversion.referee_account_id == referrer.account_id
    ):
        flags.add("self_referral:same_account")
    referee_domain = (conversion.referee_email_domain or "").lower() or None
    referrer_domain = email_domain(referrer.email)
    if (
        referee_domain
        and referee_domain == referrer_domain
        and referee_domain not in FREE_MAIL_DOMAINS
    ):
        flags.add("self_referral:same_email_domain")
    if referee_domain in DISPOSABLE_DOMAINS:
        flags.add("disposable_email_domain")
    return tuple(sorted(flags))


@dataclass(frozen=True, slots=True)
class FirstClicks:
    """When a code's tracked link was first clicked by a person (bots and prefetches
    aside): from a browser of the code's owner (``own``, seen on their page), and from
    any other browser (``others``); ``None`` when never."""

    own: datetime | None = None
    others: datetime | None = None


def only_own_clicks(clicks: FirstClicks, at: datetime) -> bool:
    """Whether the link's clicks up to ``at`` (a conversion) are all the referrer's own,
    and there is one: the referrer clicked their own link and no one else did, a
    self-referral signal. A conversion whose code was typed with no click is not one."""
    own_before = clicks.own is not None and clicks.own <= at
    others_before = clicks.others is not None and clicks.others <= at
    return own_before and not others_before


GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
REFERRAL_CYCLE = "referral_cycle"
SAME_EMAIL = "self_referral:same_email"
SAME_STRIPE_CUSTOMER = "self_referral:same_stripe_customer"
SAME_CARD = "self_referral:same_card"
SELF_REFERRAL_CLICK = "self_referral:own_clicks"
# A longer chain than this is not followed: the walk stays bounded on any graph.
MAX_CYCLE_LENGTH = 16


def normalize_email(email: str | None) -> str | None:
    """The mailbox an address delivers to: lowercased, without a ``+tag``, and for
    Gmail without dots and on ``gmail.com``; ``None`` for no usable address."""
    if not email or "@" not in email:
        return None
    local, domain = email.strip().lower().rsplit("@", 1)
    local = local.split("+", 1)[0]
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    if not local or not domain:
        return None
    return f"{local}@{domain}"


PAYOUT_DESTINATION_CHANGED = "payout_destination_changed"
# The contact fields a payout is sent to (domain.rewards.choose_rail).
DESTINATION_FIELDS = ("stripe_account_id", "stripe_customer_id")


@dataclass(frozen=True, slots=True)
class DestinationChange:
    """One payout destination field of a known contact, read with another value.

    ``old`` is ``None`` when the contact had no such destination yet: a first
    destination on an existing referrer is a change too (it can redirect their payouts
    from a balance credit to a transfer to someone's account).
    """

    contact_id: str
    field: str
    old: str | None
    new: str


def destination_changes(
    stored: Mapping[str, Contact], incoming: Iterable[Contact]
) -> list[DestinationChange]:
    """The payout destination changes ``incoming`` rows make to ``stored`` contacts.

    A contact not stored yet changes nothing (it has no payouts to redirect); a row
    without a destination keeps the stored one (the ledger keeps ids another source
    set), so it changes nothing either.

    Args:
        stored: the contacts as the ledger has them, by contact id.
        incoming: the rows about to be stored.

    Returns:
        One change per (contact, field) whose value differs, in the order read.
    """
    changes: list[DestinationChange] = []
    for row in incoming:
        before = stored.get(row.contact_id)
        if before is None:
            continue
        for name in DESTINATION_FIELDS:
            new, old = getattr(row, name), getattr(before, name)
            if new is not None and new != old:
                changes.append(DestinationChange(row.contact_id, name, old, new))
    return changes


def velocity_flag(rules: Fraud) -> str:
    return f"velocity:over_{rules.max_conversions_per_window}_per_{rules.window_hours}h"


def party(account_id: str | None, contact_id: str | None) -> str | None:
    """A node of the referrer graph: the account when known (colleagues are one party),
    else the contact."""
    if account_id:
        return f"account:{account_id}"
    if contact_id:
        return f"contact:{contact_id}"
    return None


@dataclass(frozen=True, slots=True)
class ReferralEdge:
    """One conversion as an edge of the referrer graph: its referee was referred by its
    referrer. ``referee_account_id`` is the conversion's account, else the account of
    its referee contact."""

    conversion_id: str
    referee_account_id: str | None
    referee_contact_id: str | None
    referrer_id: str
    referrer_account_id: str | None

    @property
    def referee(self) -> str | None:
        return party(self.referee_account_id, self.referee_contact_id)

    @property
    def referrer(self) -> str | None:
        return party(self.referrer_account_id, self.referrer_id)


@dataclass(frozen=True)
class FraudHistory:
    """What the ledger knows beyond a batch of conversions (see ``ledger.fraud.fraud_history``).

    Attributes:
        referees: the referee contacts of the batch, by contact id (address, account and
            Stripe customer).
        referee_customers: conversion id -> the Stripe customers that paid it.
        referrer_cards: referrer id -> fingerprints of the cards they paid with.
        recent: referrer id -> conversion id -> occurred_at, of their conversions from
            one window before the batch's oldest on (the batch's own may be among them).
        edges: conversions reachable backwards from the batch's referrers (who referred
            them, who referred those...), the batch's own may be among them.
        link_clicks: referral code -> the first clicks on its tracked link, the owner's
            own and others' (codes never clicked by a person are absent).
    """

    referees: Mapping[str, Contact] = field(default_factory=dict)
    referee_customers: Mapping[str, frozenset[str]] = field(default_factory=dict)
    referrer_cards: Mapping[str, frozenset[str]] = field(default_factory=dict)
    recent: Mapping[str, Mapping[str, datetime]] = field(default_factory=dict)
    edges: Sequence[ReferralEdge] = ()
    link_clicks: Mapping[str, FirstClicks] = field(default_factory=dict)


def flags_for_batch(
    conversions: Sequence[Conversion],
    referrers: Mapping[str, Contact],
    history: FraudHistory,
    rules: Fraud | None = None,
) -> dict[str, tuple[str, ...]]:
    """The fraud flags of each conversion credited to its referrer, sorted.

    Pure: everything beyond the conversions comes from ``history``. A conversion whose
    referrer is not in ``referrers`` gets no entry.

    Args:
        conversions: the batch.
        referrers: contact id -> contact, for the batch's referrers.
        history: what the ledger knows around the batch.
        rules: the velocity cap (the program's ``fraud`` section; default if ``None``).

    Returns:
        conversion id -> its flags.
    """
    rules = rules or Fraud()
    window = timedelta(hours=rules.window_hours)
    by_id: dict[str, dict[str, datetime]] = {r: dict(t) for r, t in history.recent.items()}
    for c in conversions:
        by_id.setdefault(c.referrer_id, {})[c.conversion_id] = c.occurred_at
    times = {r: sorted(t.values()) for r, t in by_id.items()}
    edges = {e.conversion_id: e for e in history.edges}
    for c in conversions:
        referrer = referrers.get(c.referrer_id)
        if referrer is not None:
            edges[c.conversion_id] = _edge(c, referrer, history.referees)
    referred_by = _graph(edges.values())

    flags: dict[str, tuple[str, ...]] = {}
    for c in conversions:
        referrer = referrers.get(c.referrer_id)
        if referrer is None:
            continue
        found = set(flags_for(c, referrer))
        referee = history.referees.get(c.referee_contact_id or "")
        found |= _identity_flags(c, referrer, referee, history)
        # Conversions in (occurred_at - window, occurred_at], this one included.
        mine = times[c.referrer_id]
        in_window = bisect_right(mine, c.occurred_at) - bisect_right(mine, c.occurred_at - window)
        if in_window > rules.max_conversions_per_window:
            found.add(velocity_flag(rules))
        clicks = history.link_clicks.get(c.referral_code or "")
        if clicks is not None and only_own_clicks(clicks, c.occurred_at):
            found.add(SELF_REFERRAL_CLICK)
        edge = edges[c.conversion_id]
        if _reaches(referred_by, edge.referrer, edge.referee):
            found.add(REFERRAL_CYCLE)
        flags[c.conversion_id] = tuple(sorted(found))
    return flags


def _identity_flags(
    c: Conversion, referrer: Contact, referee: Contact | None, history: FraudHistory
) -> set[str]:
    found: set[str] = set()
    if referee is not None:
        mine = normalize_email(referrer.email)
        if mine is not None and mine == normalize_email(referee.email):
            found.add(SAME_EMAIL)
    customers = set(history.referee_customers.get(c.conversion_id, ()))
    if referee is not None and referee.stripe_customer_id:
        customers.add(referee.stripe_customer_id)
    if referrer.stripe_customer_id and referrer.stripe_customer_id in customers:
        found.add(SAME_STRIPE_CUSTOMER)
    if c.card_fingerprint and c.card_fingerprint in history.referrer_cards.get(
        referrer.contact_id, frozenset()
    ):
        found.add(SAME_CARD)
    return found


def _edge(c: Conversion, referrer: Contact, referees: Mapping[str, Contact]) -> ReferralEdge:
    known = referees.get(c.referee_contact_id or "")
    return ReferralEdge(
        conversion_id=c.conversion_id,
        referee_account_id=c.referee_account_id or (known.account_id if known else None),
        referee_contact_id=c.referee_contact_id,
        referrer_id=referrer.contact_id,
        referrer_account_id=referrer.account_id,
    )


def _graph(edges: Iterable[ReferralEdge]) -> dict[str, set[str]]:
    """referee party -> the parties that referred it."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        referee, referrer = e.referee, e.referrer
        if referee is not None and referrer is not None and referee != referrer:
            graph.setdefault(referee, set()).add(referrer)
    return graph


def _reaches(referred_by: Mapping[str, set[str]], start: str | None, goal: str | None) -> bool:
    """Whether following "was referred by" from ``start`` leads to ``goal`` (a party
    referring itself is a self-referral, flagged as such, not a cycle)."""
    if start is None or goal is None or start == goal:
        return False
    seen, frontier = {start}, {start}
    for _ in range(MAX_CYCLE_LENGTH):
        frontier = {up for node in frontier for up in referred_by.get(node, ())} - seen
        if goal in frontier:
            return True
        if not frontier:
            return False
        seen |= frontier
    return False
