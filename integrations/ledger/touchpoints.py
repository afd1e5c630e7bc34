"""Touchpoints in the ledger: stored when a conversion is recorded, read when it is
rewarded (see :mod:`domain.touchpoints` for what a touch is and how credit follows).

:func:`record_conversions_touches` runs inside the transaction that inserts
conversions (after a batch of Stripe or CRM conversions is placed, and in
``SqlConversionStore.record_conversions``), so a conversion never exists without its touches.
For a new conversion it stores:

* the code it was made with: its owner, at the conversion;
* clicks on asks carrying that code (SendGrid ``click`` events on the ask's message)
  at or before the conversion: the email with the code was opened and followed. SendGrid
  reports the click of whoever opened the message, so a click is tied to a referee only
  through the code the referee then used;
* the last counted click on the referrer's tracked link (``GET /r/<code>``, a person's,
  not a bot's or a prefetch, nor the referrer's own from a browser they opened their
  page in) at or before the conversion: the referee followed the
  link. A click is tied to a referee only through the code the referee then used, as
  an ask's click is; one touch stands for the link (the last click before the
  conversion), since counting every click of a widely shared link would let one
  referrer's link outweigh every other touch under the linear and decay models. It is
  stored as an ``ask_click`` touch (the link is what every ask carries) whose ref is
  ``link:<click id>``;
* partner registrations of the referee's company domain (its email domain, or its CRM
  account's domain) made before the conversion and still holding at it, when the
  registrations table exists.

Each touch names the referee by what the conversion knew (CRM account, CRM contact,
Stripe customer); its id derives from (kind, ref, referrer, referee), so recording the
same conversion again adds nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, select

from domain.models import Conversion, derived_id
from domain.stores.touchpoints import Referee
from domain.touchpoints import StoredTouchpoint, TouchpointKind
from integrations.ledger.base import (
    LedgerBase,
    chunks,
    not_indexed,
)
from integrations.ledger.links import counted_click
from integrations.ledger.tables import (
    T_ACCOUNTS,
    T_ASKS,
    T_CONVERSION_PAYMENTS,
    T_EMAIL_EVENTS,
    T_LINK_CLICKS,
    T_TOUCHPOINTS,
    Base,
)

_CLICK = "click"
LINK_CLICK_REF = "link:"
_REGISTRATIONS = "partner_registrations"
_HOLDING = ("active", "extended", "converted")

__all__ = ["Referee", "SqlTouchpointStore", "record_conversions_touches", "touch_row"]


def touch_row(touch: StoredTouchpoint, referee: Referee, now: datetime) -> dict[str, Any]:
    return {
        "touchpoint_id": derived_id(
            "touchpoint", touch.kind.value, touch.ref, touch.referrer_id, referee.key
        ),
        "referrer_id": touch.referrer_id,
        "kind": touch.kind.value,
        "ref": touch.ref[:330],
        "referee_account_id": referee.account_id,
        "referee_contact_id": referee.contact_id,
        "referee_customer": referee.customer,
        "occurred_at": touch.at,
        "created_at": now,
    }


def record_conversions_touches(
    ledger: LedgerBase,
    conn: Connection,
    placed: Sequence[tuple[Conversion, str | None]],
    now: datetime,
) -> int:
    """Store the touches newly recorded conversions bring (see the module), each
    conversion with the Stripe customer it came from, if any. A few statements per
    batch, not four per conversion: a conversion's touches read asks, clicks, accounts
    and registrations, never the other conversions, so the batch's touches found at the
    end of its transaction are those found one conversion at a time.

    Returns:
        How many touches were new.
    """
    known = [
        (c, referee)
        for c, customer in placed
        if (referee := Referee(c.referee_account_id, c.referee_contact_id, customer)).known
    ]
    if not known:
        return 0
    clicks = _clicks_by_code(conn, {c.referral_code for c, _ in known})
    registrations = _registrations_by_conversion(conn, [c for c, _ in known])
    link_clicks = _link_clicks_by_code(conn, [c for c, _ in known])
    rows: list[dict[str, Any]] = []
    for conversion, referee in known:
        touches = [
            StoredTouchpoint(
                conversion.referrer_id,
                conversion.occurred_at,
                TouchpointKind.CODE,
                conversion.conversion_id,
            )
        ]
        touches += [
            StoredTouchpoint(contact_id, at, TouchpointKind.ASK_CLICK, event_id)
            for event_id, at, contact_id in clicks.get(conversion.referral_code, ())
            if at <= conversion.occurred_at
        ]
        last_click = _last_click_before(link_clicks.get(conversion.referral_code, ()), conversion)
        if last_click is not None:
            touches.append(last_click)
        touches += registrations.get(conversion.conversion_id, [])
        rows += [touch_row(t, referee, now) for t in touches]
    return len(ledger._insert_ignore(conn, T_TOUCHPOINTS, rows, T_TOUCHPOINTS.c.touchpoint_id))


def _clicks_by_code(
    conn: Connection, codes: Iterable[str]
) -> dict[str, list[tuple[str, datetime, str]]]:
    """Referral code -> (SendGrid event id, when, asked contact) of every click on an ask
    that carried the code."""
    found: dict[str, list[tuple[str, datetime, str]]] = {}
    for chunk in chunks(sorted(codes)):
        rows = conn.execute(
            select(
                T_ASKS.c.referral_code,
                T_EMAIL_EVENTS.c.sg_event_id,
                T_EMAIL_EVENTS.c.occurred_at,
                T_ASKS.c.contact_id,
            )
            .join(T_ASKS, T_ASKS.c.ask_id == T_EMAIL_EVENTS.c.message_id)
            .where(T_ASKS.c.referral_code.in_(chunk), T_EMAIL_EVENTS.c.type == _CLICK)
        )
        for code, event_id, at, contact_id in rows:
            found.setdefault(code, []).append((event_id, at, contact_id))
    return found


def _link_clicks_by_code(
    conn: Connection, conversions: Sequence[Conversion]
) -> dict[str, list[StoredTouchpoint]]:
    """Referral code -> the counted clicks on its tracked link up to the latest of the
    batch's conversions made with it, in time order, as touches of the code's owner."""
    latest: dict[str, datetime] = {}
    for c in conversions:
        latest[c.referral_code] = max(c.occurred_at, latest.get(c.referral_code, c.occurred_at))
    found: dict[str, list[StoredTouchpoint]] = {}
    for chunk in chunks(sorted(latest)):
        rows = conn.execute(
            select(
                T_LINK_CLICKS.c.code,
                T_LINK_CLICKS.c.click_id,
                T_LINK_CLICKS.c.clicked_at,
                T_LINK_CLICKS.c.referrer_id,
            )
            .where(
                T_LINK_CLICKS.c.code.in_(chunk),
                counted_click(),
                T_LINK_CLICKS.c.clicked_at <= max(latest[code] for code in chunk),
            )
            .order_by(T_LINK_CLICKS.c.clicked_at, T_LINK_CLICKS.c.click_id)
        )
        for code, click_id, at, referrer_id in rows:
            found.setdefault(code, []).append(
                StoredTouchpoint(
                    referrer_id, at, TouchpointKind.ASK_CLICK, LINK_CLICK_REF + click_id
                )
            )
    return found


def _last_click_before(
    clicks: Sequence[StoredTouchpoint], conversion: Conversion
) -> StoredTouchpoint | None:
    before = [t for t in clicks if t.at <= conversion.occurred_at]
    return before[-1] if before else None


def _registrations_by_conversion(
    conn: Connection, conversions: Sequence[Conversion]
) -> dict[str, list[StoredTouchpoint]]:
    """Conversion id -> the partner registrations of its referee's domain (its email
    domain or its CRM account's) made before it and still holding at it."""
    table = Base.metadata.tables.get(_REGISTRATIONS)
    if table is None:
        return {}
    account_domains: dict[str, set[str]] = {}
    account_ids = sorted({c.referee_account_id for c in conversions if c.referee_account_id})
    for chunk in chunks(account_ids):
        for account_id, domain in conn.execute(
            select(T_ACCOUNTS.c.account_id, T_ACCOUNTS.c.domain).where(
                T_ACCOUNTS.c.account_id.in_(chunk), T_ACCOUNTS.c.domain.is_not(None)
            )
        ):
            account_domains.setdefault(account_id, set()).add(domain)
    wanted: dict[str, set[str]] = {}
    for c in conversions:
        domains = {c.referee_email_domain} if c.referee_email_domain else set()
        if c.referee_account_id:
            domains |= account_domains.get(c.referee_account_id, set())
        lowered = {d.lower() for d in domains if d}
        if lowered:
            wanted[c.conversion_id] = lowered
    if not wanted:
        return {}
    by_domain: dict[str, list[tuple[str, str, datetime, datetime]]] = {}
    for chunk in chunks(sorted(set().union(*wanted.values()))):
        for registration_id, partner_id, domain, registered_at, expires_at in conn.execute(
            select(
                table.c.registration_id,
                table.c.partner_id,
                table.c.domain,
                table.c.registered_at,
                table.c.expires_at,
            ).where(table.c.domain.in_(chunk), not_indexed(table.c.status).in_(_HOLDING))
        ):
            by_domain.setdefault(domain, []).append(
                (registration_id, partner_id, registered_at, expires_at)
            )
    found: dict[str, list[StoredTouchpoint]] = {}
    for c in conversions:
        for domain in sorted(wanted.get(c.conversion_id, ())):
            for registration_id, partner_id, registered_at, expires_at in by_domain.get(domain, ()):
                if registered_at <= c.occurred_at < expires_at:
                    found.setdefault(c.conversion_id, []).append(
                        StoredTouchpoint(
                            partner_id, registered_at, TouchpointKind.REGISTRATION, registration_id
                        )
                    )
    return found


class SqlTouchpointStore(LedgerBase):
    """The ``touchpoints`` store: reading and adding the touches of referees."""

    def record_touchpoints(
        self, touches: Sequence[tuple[StoredTouchpoint, Referee]], now: datetime
    ) -> int:
        """Store touches made elsewhere (a registration as it is made, a backfill);
        those already stored are left as they are. Returns how many were new."""
        rows = [touch_row(t, r, now) for t, r in touches if r.known]
        with self._begin() as conn:
            return len(
                self._insert_ignore(conn, T_TOUCHPOINTS, rows, T_TOUCHPOINTS.c.touchpoint_id)
            )

    def record_conversion_touches(
        self, placed: Sequence[tuple[Conversion, str | None]], now: datetime
    ) -> int:
        """Store the touches newly recorded conversions bring (see the module), each with
        the Stripe customer it came from; in a unit of work, right after the conversions
        are inserted. Returns how many were new."""
        with self._begin() as conn:
            return record_conversions_touches(self, conn, placed, now)

    def conversion_customers(self, conversion_ids: Iterable[str]) -> dict[str, set[str]]:
        """Conversion id -> the Stripe customers its payments came from."""
        found: dict[str, set[str]] = {}
        with self._connect() as conn:
            for chunk in chunks(sorted(set(conversion_ids))):
                for conversion_id, customer in conn.execute(
                    select(
                        T_CONVERSION_PAYMENTS.c.conversion_id, T_CONVERSION_PAYMENTS.c.customer_ref
                    ).where(
                        T_CONVERSION_PAYMENTS.c.conversion_id.in_(chunk),
                        T_CONVERSION_PAYMENTS.c.customer_ref.is_not(None),
                    )
                ):
                    found.setdefault(conversion_id, set()).add(customer)
        return found

    def touchpoints_for(
        self, conversions: Sequence[Conversion]
    ) -> dict[str, list[StoredTouchpoint]]:
        """Conversion id -> the stored touches of its referee at or before it (found by
        its CRM account, CRM contact or any Stripe customer of its payments)."""
        if not conversions:
            return {}
        customers = self.conversion_customers(c.conversion_id for c in conversions)
        names: dict[str, set[str]] = {"account": set(), "contact": set(), "customer": set()}
        for c in conversions:
            if c.referee_account_id:
                names["account"].add(c.referee_account_id)
            if c.referee_contact_id:
                names["contact"].add(c.referee_contact_id)
            names["customer"] |= customers.get(c.conversion_id, set())
        columns = {
            "account": T_TOUCHPOINTS.c.referee_account_id,
            "contact": T_TOUCHPOINTS.c.referee_contact_id,
            "customer": T_TOUCHPOINTS.c.referee_customer,
        }
        latest = max(c.occurred_at for c in conversions)
        rows: dict[str, Mapping[str, Any]] = {}
        with self._connect() as conn:
            for name, values in names.items():
                for chunk in chunks(sorted(values)):
                    for row in conn.execute(
                        select(T_TOUCHPOINTS).where(
                            and_(columns[name].in_(chunk), T_TOUCHPOINTS.c.occurred_at <= latest)
                        )
                    ).mappings():
                        rows[row["touchpoint_id"]] = dict(row)
        # Sorted once for the batch, then indexed by referee: sorting per conversion, then
        # scanning every touch of the batch per conversion, made a batch quadratic.
        ordered = sorted(rows.values(), key=lambda r: (r["occurred_at"], r["touchpoint_id"]))
        by_name: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(ordered):
            for name, column in (
                ("account", "referee_account_id"),
                ("contact", "referee_contact_id"),
                ("customer", "referee_customer"),
            ):
                if r[column] is not None:
                    by_name.setdefault((name, r[column]), []).append(i)
        found: dict[str, list[StoredTouchpoint]] = {}
        for c in conversions:
            keys = [("customer", customer) for customer in customers.get(c.conversion_id, ())]
            if c.referee_account_id:
                keys.append(("account", c.referee_account_id))
            if c.referee_contact_id:
                keys.append(("contact", c.referee_contact_id))
            mine = sorted({i for key in keys for i in by_name.get(key, ())})
            found[c.conversion_id] = [
                StoredTouchpoint(
                    r["referrer_id"], r["occurred_at"], TouchpointKind(r["kind"]), r["ref"]
                )
                for r in (ordered[i] for i in mine)
                if r["occurred_at"] <= c.occurred_at
            ]
        return found
