"""The HubSpot source: companies, contacts, deals and tickets from the CRM v3 search API.

What is read, and what it becomes (every property name is configurable through
:class:`HubSpotMapping`):

* **companies** -> :class:`~domain.models.Account`: ``name``, ``domain``, and
  ``customer_since`` from the first set of ``hs_lifecyclestage_customer_date`` (when the
  company entered the *customer* lifecycle stage) and ``closedate`` (which HubSpot sets
  when the company's first deal is won), so tenure works whether or not the portal
  keeps lifecycle stages up to date.
* **contacts** -> :class:`~domain.models.Contact`: ``email``, ``firstname`` and
  ``lastname``, ``associatedcompanyid`` (the primary company), ``hs_email_optout``
  (*unsubscribed from all email*) and a referrer-type property (``referrer_type``).
* **deals** (only those in a stage the program reads): a won stage (``closedwon``) is a
  ``deal_won`` at ``closedate`` with ``amount`` in ``deal_currency_code``, or a
  ``renewal`` when its ``dealtype`` or ``pipeline`` is configured as one; a qualified
  stage (``qualifiedtobuy``) is a ``deal_qualified``, dated by HubSpot's "date entered
  stage" property. A deal carrying a referral code (``referral_code``) is a referred
  lead's conversion: it keeps the code, and a won one also yields its qualified
  milestone (a lead that jumped straight to won was qualified too; the event id is the
  one a read in the qualified stage would have produced, so it is stored once).
* **tickets** -> ``ticket_opened`` at ``createdate`` with ``hs_ticket_priority``, and
  once ``closed_date`` is set, ``ticket_resolved`` with a CSAT property (``csat_score``).
* a usage-milestone property on contacts or companies (``usage_milestone``), when set,
  -> ``usage_milestone`` with that value.
* **partner deal registrations** (:meth:`HubSpotSource.fetch_registrations`, only when
  :attr:`HubSpotMapping.registration_partner_property` is set): a company whose
  partner property holds the registering partner's contact id is a claim on the
  company's ``domain``, made at ``partner_registration_date``, with the lead's contact
  (``partner_registration_contact``: a contact id or an address, kept only as a keyed
  hash) and the qualification evidence (``partner_registration_evidence``). They are
  read by their own search (the partner property ``HAS_PROPERTY``) and cursor; a
  company read again (modified since) is the same registration.

Deals and tickets get their company and contact through the v4 associations API: the
company labelled primary, else the lowest id; the contact with the lowest id (HubSpot
has no primary contact on a deal). Event ids are stable per meaning (``deal:<id>:won``,
``ticket:<id>:resolved``, ``contact:<id>:milestone:<value>``), so reading a record again
stores nothing new: the ledger ignores an event id it already holds.

**Incremental reads.** The cursor keeps, per object type, the newest modification time
read (``hs_lastmodifieddate``; ``lastmodifieddate`` for contacts) and the ids read at
exactly that time. A read asks for records modified at or after it, sorted oldest
first, and skips only those ids at that exact time, so a record modified in the same
millisecond as the cursor is still read. Pages are keyset pages: each is a new search
starting where the previous one ended, never ``after`` offsets, because an offset
shifts when a record leaves the result set mid-read (it was modified or archived) and
silently skips the next one, and because a search stops at 10,000 results. When more
records share one time than fit a page, they are read by ``hs_object_id``. Records
modified in the last ``settle`` period are left for the next read: HubSpot documents
that a change can take a few moments to reach search results, and a record indexed late
with an older time than the cursor would otherwise be missed for good.

**Counting.** Each object read is one record, and each further event it carries (the
resolution of a closed ticket, a milestone beside an account row, the qualified
milestone of a referred won deal) one more: ``records_in == events + rejected +
reference_only`` holds. A malformed object is one rejected record naming
``hubspot:<kind>:<id>``, the field and the reason; its other facts are not guessed.
Reasons and raw text never hold an email address.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

import requests

from domain.errors import (
    InputRejected,
    InvalidAmount,
    PermanentIntegrationError,
    RetryableIntegrationError,
)
from domain.inputs import is_email
from domain.models import Account, Contact, EventType, ReferrerType, Rejected, SourceEvent
from domain.money import Money, exponent
from domain.ports import ClaimRow, ClaimsRead, SourceBatch
from integrations.sources.http import JsonHttpClient, RetryPolicy, Sleep, mask_emails

logger = logging.getLogger(__name__)

SOURCE = "hubspot"
JSON = dict[str, Any]
Output = Account | Contact | SourceEvent

# Read in this order: contacts before deals, so a referred deal finds its contact's
# email domain among the contacts of the same read.
OBJECT_TYPES = ("companies", "contacts", "deals", "tickets")
KIND = {"companies": "company", "contacts": "contact", "deals": "deal", "tickets": "ticket"}
# Contacts predate the hs_ prefix; every other object uses hs_lastmodifieddate.
MODIFIED = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
    "deals": "hs_lastmodifieddate",
    "tickets": "hs_lastmodifieddate",
}
MAX_PAGE_SIZE = 100
# Enough of a record to see what was wrong with it; a quarantine row is not a backup.
MAX_RAW_CHARS = 2000
_CURSOR_VERSION = 1
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
# A whole number as HubSpot returns one ("4", "4.0"): plain ASCII digits, a few of them.
_WHOLE = re.compile(r"[0-9]{1,6}(?:\.0*)?")


@dataclass(frozen=True, slots=True)
class HubSpotMapping:
    """What the portal's properties and values mean; the defaults fit a stock portal.

    Attributes:
        won_stages: ``dealstage`` ids of won deals (a custom pipeline's are numbers).
        qualified_stages: ``dealstage`` ids that make a deal qualified.
        renewal_deal_types: ``dealtype`` values that make a won deal a renewal (stock
            options are ``newbusiness`` and ``existingbusiness``; the latter also covers
            upsells, so it is not assumed).
        renewal_pipelines: ``pipeline`` ids whose won deals are renewals.
        referral_code_property: deal property holding a referral code.
        default_currency: currency of an amount without ``deal_currency_code`` (a
            single-currency portal); ``None`` refuses such amounts.
        referrer_type_property: contact property holding customer/partner/employee;
            empty means customer.
        stripe_customer_id_property: contact property holding the Stripe customer id
            (``cus_...``) a reward may be credited to, or ``None``.
        stripe_account_id_property: contact property holding the Stripe Connect
            account id (``acct_...``) a reward may be transferred to, or ``None``.
        ticket_csat_property: ticket property holding a 1-5 CSAT score.
        contact_milestone_property: contact property naming a usage milestone, or
            ``None`` to read none.
        company_milestone_property: the same on companies.
        customer_since_properties: company properties tried in order for the date the
            company became a customer.
        deal_primary_company_type_id: association type id of a deal's primary company.
        ticket_primary_company_type_id: association type id of a ticket's primary company.
        registration_partner_property: company property holding the contact id of the
            partner who registered the company, or ``None`` to read no registrations.
        registration_date_property: company property holding when the partner
            registered it (a date or a datetime).
        registration_contact_property: company property naming the lead's contact (a
            contact id or an email address).
        registration_evidence_property: company property holding the qualification
            evidence.
    """

    won_stages: tuple[str, ...] = ("closedwon",)
    qualified_stages: tuple[str, ...] = ("qualifiedtobuy",)
    renewal_deal_types: tuple[str, ...] = ("renewal",)
    renewal_pipelines: tuple[str, ...] = ()
    referral_code_property: str = "referral_code"
    default_currency: str | None = None
    referrer_type_property: str = "referrer_type"
    stripe_customer_id_property: str | None = None
    stripe_account_id_property: str | None = None
    ticket_csat_property: str = "csat_score"
    contact_milestone_property: str | None = "usage_milestone"
    company_milestone_property: str | None = "usage_milestone"
    customer_since_properties: tuple[str, ...] = ("hs_lifecyclestage_customer_date", "closedate")
    deal_primary_company_type_id: int = 5
    ticket_primary_company_type_id: int = 26
    registration_partner_property: str | None = None
    registration_date_property: str = "partner_registration_date"
    registration_contact_property: str = "partner_registration_contact"
    registration_evidence_property: str = "partner_registration_evidence"

    def __post_init__(self) -> None:
        if not self.won_stages:
            raise ValueError("won_stages must name at least one deal stage")
        if set(self.won_stages) & set(self.qualified_stages):
            raise ValueError("a deal stage cannot be both won and qualified")
        if self.default_currency is not None:
            exponent(self.default_currency)  # an unknown currency fails here, at start

    def properties(self, object_type: str) -> list[str]:
        """The properties a search of ``object_type`` asks for."""
        wanted: list[str | None]
        if object_type == "companies":
            wanted = [
                "name",
                "domain",
                *self.customer_since_properties,
                self.company_milestone_property,
                *self.registration_properties(),
            ]
        elif object_type == "contacts":
            wanted = [
                "email",
                "firstname",
                "lastname",
                "associatedcompanyid",
                "hs_email_optout",
                self.referrer_type_property,
                self.stripe_customer_id_property,
                self.stripe_account_id_property,
                self.contact_milestone_property,
            ]
        elif object_type == "deals":
            wanted = [
                "dealstage",
                "closedate",
                "amount",
                "deal_currency_code",
                "pipeline",
                "dealtype",
                self.referral_code_property,
                *(p for stage in self.qualified_stages for p in _entered_properties(stage)),
            ]
        else:
            wanted = [
                "hs_ticket_priority",
                "createdate",
                "closed_date",
                self.ticket_csat_property,
            ]
        wanted.append(MODIFIED[object_type])
        return sorted({p for p in wanted if p})

    def registration_properties(self) -> tuple[str, ...]:
        """The company properties a partner registration is read from (none when
        registrations are not read)."""
        if self.registration_partner_property is None:
            return ()
        return (
            self.registration_partner_property,
            self.registration_date_property,
            self.registration_contact_property,
            self.registration_evidence_property,
        )


def _entered_properties(stage: str) -> tuple[str, str]:
    # HubSpot calculates a "date entered <stage>" property per deal stage: the current
    # hs_v2_ one and the older one. Both are asked for; one a portal lacks comes back empty.
    return (f"hs_v2_date_entered_{stage}", f"hs_date_entered_{stage}")


@dataclass(frozen=True, slots=True)
class _Mark:
    """Where the last read of one object type stopped."""

    since_ms: int = 0
    ids: frozenset[str] = frozenset()


@dataclass(slots=True)
class _Collected:
    accounts: list[Account] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    events: list[SourceEvent] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    records_in: int = 0
    reference_only: int = 0

    def take(self, outputs: Sequence[Output]) -> None:
        # One record per fact: an object with no fact the program reads is still one
        # record read, counted with the reference rows.
        self.records_in += max(1, len(outputs))
        if not outputs:
            self.reference_only += 1
        for item in outputs:
            if isinstance(item, Account):
                self.accounts.append(item)
                self.reference_only += 1
            elif isinstance(item, Contact):
                self.contacts.append(item)
                self.reference_only += 1
            else:
                self.events.append(item)

    def reject(self, exc: InputRejected, raw: object) -> None:
        self.records_in += 1
        self.rejected.append(
            Rejected(SOURCE, exc.record, exc.field, mask_emails(exc.reason), _raw_text(raw))
        )


class HubSpotSource:
    """:class:`domain.ports.EventSource` on the HubSpot CRM (see the module docstring).

    Args:
        access_token: a private app access token with read scopes on companies,
            contacts, deals and tickets; sent as a bearer token, never logged.
        api_base: API base URL (tests point it at a local fake).
        mapping: what the portal's properties mean.
        session: a ``requests`` session to use (the caller closes it); by default each
            fetch opens and closes its own.
        sleep: waits that many seconds between retries (tests inject a recorder).
        clock: the current time (timezone-aware), to leave the settle period unread.
        page_size: records per search request, 1 to 100.
        timeout: seconds to wait for each HTTP request.
        max_attempts: attempts per request before the fetch fails as retryable.
        settle: how recent a change must not be to be read now.
    """

    name = SOURCE

    def __init__(
        self,
        access_token: str,
        api_base: str = "https://api.hubapi.com",
        *,
        mapping: HubSpotMapping | None = None,
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        page_size: int = MAX_PAGE_SIZE,
        timeout: float = 30.0,
        max_attempts: int = 5,
        settle: timedelta = timedelta(seconds=60),
    ) -> None:
        if not access_token:
            raise ValueError("HubSpot needs an access token")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
        self._token = access_token
        self.api_base = api_base.rstrip("/")
        self.mapping = mapping or HubSpotMapping()
        self._session = session
        self._sleep = sleep
        self._clock = clock
        self.page_size = page_size
        self._timeout = timeout
        self._retry = RetryPolicy(max_attempts=max_attempts)
        self._settle = settle

    def __repr__(self) -> str:
        return f"HubSpotSource(api_base={self.api_base!r})"

    def _http(self) -> JsonHttpClient:
        """A client for one read: the token as the bearer, and masked in every error."""
        return JsonHttpClient(
            SOURCE,
            self.api_base,
            headers={"Authorization": f"Bearer {self._token}"},
            secrets=(self._token,),
            session=self._session,
            timeout=self._timeout,
            retry=self._retry,
            sleep=self._sleep,
        )

    def fetch(self, cursor: str | None) -> SourceBatch:
        """Everything changed since ``cursor`` (everything when ``None``).

        Raises:
            RetryableIntegrationError: HubSpot kept failing (429, 5xx, network).
            PermanentIntegrationError: HubSpot refused (bad token, missing scope), or
                ``cursor`` is not one this source wrote.
        """
        marks = _load_cursor(cursor)
        upper_ms = _ms(self._clock() - self._settle)
        collected = _Collected()
        with self._http() as http:
            reader = _Reader(http, self.mapping, self.page_size, upper_ms)
            domains: dict[str, str | None] = {}
            for object_type in OBJECT_TYPES:
                raws, marks[object_type] = reader.changed(object_type, marks[object_type])
                logger.info("%s: %d %s changed", SOURCE, len(raws), object_type)
                if object_type == "companies":
                    for raw in raws:
                        self._map(collected, raw, "company", self._company)
                elif object_type == "contacts":
                    for raw in raws:
                        outputs = self._map(collected, raw, "contact", self._contact)
                        for item in outputs:
                            if isinstance(item, Contact):
                                domains[item.contact_id] = _domain(item.email)
                else:
                    self._objects_with_associations(collected, reader, object_type, raws, domains)
        return SourceBatch(
            source=SOURCE,
            accounts=collected.accounts,
            contacts=collected.contacts,
            events=collected.events,
            rejected=collected.rejected,
            records_in=collected.records_in,
            reference_only=collected.reference_only,
            cursor=_dump_cursor(marks),
        )

    def fetch_registrations(self, cursor: str | None) -> ClaimsRead:
        """The partner registrations of the companies changed since ``cursor`` whose
        partner property is set (see the module docstring); nothing, and no request,
        when :attr:`HubSpotMapping.registration_partner_property` is not set.

        A company whose registration cannot be a claim (no id, no registration date,
        a date that is no date) is refused naming the company and the property; the
        reason never holds an address and no raw text is kept.

        Raises:
            RetryableIntegrationError: HubSpot kept failing (429, 5xx, network).
            PermanentIntegrationError: HubSpot refused, or ``cursor`` is not one this
                source wrote.
        """
        partner = self.mapping.registration_partner_property
        if partner is None:
            return ClaimsRead(source=SOURCE, cursor=cursor)
        marks = _load_cursor(cursor)
        upper_ms = _ms(self._clock() - self._settle)
        with self._http() as http:
            reader = _Reader(http, self.mapping, self.page_size, upper_ms)
            registered = {"propertyName": partner, "operator": "HAS_PROPERTY"}
            raws, marks["companies"] = reader.changed(
                "companies", marks["companies"], extra=[registered]
            )
        logger.info("%s: %d registered companies changed", SOURCE, len(raws))
        claims: list[ClaimRow] = []
        rejected: list[Rejected] = []
        for raw in raws:
            try:
                claims.append(self._registration(raw))
            except InputRejected as exc:
                rejected.append(Rejected(SOURCE, exc.record, exc.field, mask_emails(exc.reason)))
        return ClaimsRead(
            source=SOURCE, claims=claims, rejected=rejected, cursor=_dump_cursor(marks)
        )

    def _registration(self, raw: object) -> ClaimRow:
        m = self.mapping
        if not isinstance(raw, dict):
            raise InputRejected(f"{SOURCE}:company:?", None, "not a JSON object")
        object_id = _object_id(raw)
        record = f"{SOURCE}:company:{object_id or '?'}"
        if object_id is None:
            raise InputRejected(record, "id", "missing")
        return ClaimRow(
            record=record,
            partner_id=_prop(raw, m.registration_partner_property),
            domain=_prop(raw, "domain"),
            contact=_prop(raw, m.registration_contact_property),
            evidence=_prop(raw, m.registration_evidence_property),
            registered_at=_timestamp(record, raw, m.registration_date_property),
        )

    # -- mapping ------------------------------------------------------------------------

    def _map(
        self,
        collected: _Collected,
        raw: object,
        kind: str,
        mapper: Callable[[JSON, str, str], list[Output]],
    ) -> list[Output]:
        try:
            if not isinstance(raw, dict):
                raise InputRejected(f"{SOURCE}:{kind}:?", None, "not a JSON object")
            object_id = _object_id(raw)
            record = f"{SOURCE}:{kind}:{object_id or '?'}"
            if object_id is None:
                raise InputRejected(record, "id", "missing")
            if not isinstance(raw.get("properties"), dict):
                raise InputRejected(record, "properties", "missing")
            outputs = mapper(raw, object_id, record)
        except InputRejected as exc:
            collected.reject(exc, raw)
            return []
        collected.take(outputs)
        return outputs

    def _objects_with_associations(
        self,
        collected: _Collected,
        reader: _Reader,
        object_type: str,
        raws: Sequence[object],
        domains: dict[str, str | None],
    ) -> None:
        m = self.mapping
        primary = (
            m.deal_primary_company_type_id
            if object_type == "deals"
            else m.ticket_primary_company_type_id
        )
        for start in range(0, len(raws), MAX_PAGE_SIZE):
            chunk = raws[start : start + MAX_PAGE_SIZE]
            ids = [i for i in (_object_id(r) for r in chunk if isinstance(r, dict)) if i]
            companies = {
                k: _pick(v, primary)
                for k, v in reader.associations(object_type, "companies", ids).items()
            }
            contacts = {
                k: _pick(v, None)
                for k, v in reader.associations(object_type, "contacts", ids).items()
            }
            if object_type == "deals":
                wanted: set[str] = set()
                for raw in chunk:
                    deal_id = _object_id(raw) if isinstance(raw, dict) else None
                    contact = contacts.get(deal_id) if deal_id else None
                    has_code = isinstance(raw, dict) and _prop(raw, m.referral_code_property)
                    if has_code and contact and contact not in domains:
                        wanted.add(contact)
                domains.update(reader.email_domains(sorted(wanted, key=_id_order)))
                deal = partial(self._deal, companies=companies, contacts=contacts, domains=domains)
                for raw in chunk:
                    self._map(collected, raw, "deal", deal)
            else:
                ticket = partial(self._ticket, companies=companies, contacts=contacts)
                for raw in chunk:
                    self._map(collected, raw, "ticket", ticket)

    def _company(self, raw: JSON, company_id: str, record: str) -> list[Output]:
        m = self.mapping
        since: date | None = None
        for name in m.customer_since_properties:
            if _prop(raw, name) is not None:
                since = _timestamp(record, raw, name).date()
                break
        outputs: list[Output] = [
            Account(
                account_id=company_id,
                name=_prop(raw, "name") or company_id,
                domain=(_prop(raw, "domain") or "").lower() or None,
                customer_since=since,
            )
        ]
        milestone = _prop(raw, m.company_milestone_property)
        if milestone is not None:
            outputs.append(
                SourceEvent(
                    source=SOURCE,
                    event_id=f"company:{company_id}:milestone:{milestone}",
                    type=EventType.USAGE_MILESTONE,
                    occurred_at=_timestamp(record, raw, MODIFIED["companies"]),
                    account_id=company_id,
                    milestone=milestone,
                )
            )
        return outputs

    def _contact(self, raw: JSON, contact_id: str, record: str) -> list[Output]:
        m = self.mapping
        email = _prop(raw, "email")
        if email is not None and not is_email(email):
            raise InputRejected(record, "email", "not an email address")
        kind = (_prop(raw, m.referrer_type_property) or ReferrerType.CUSTOMER.value).lower()
        if kind not in {t.value for t in ReferrerType}:
            raise InputRejected(
                record, m.referrer_type_property, f"{kind!r} is not customer/partner/employee"
            )
        opted = (_prop(raw, "hs_email_optout") or "false").lower()
        if opted not in _TRUE | _FALSE:
            raise InputRejected(record, "hs_email_optout", f"{opted!r} is not true/false")
        name = " ".join(p for p in (_prop(raw, "firstname"), _prop(raw, "lastname")) if p)
        account_id = _prop(raw, "associatedcompanyid")
        outputs: list[Output] = [
            Contact(
                contact_id=contact_id,
                account_id=account_id,
                name=name,
                email=email,
                referrer_type=ReferrerType(kind),
                opted_out=opted in _TRUE,
                stripe_customer_id=_prop(raw, m.stripe_customer_id_property),
                stripe_account_id=_prop(raw, m.stripe_account_id_property),
            )
        ]
        milestone = _prop(raw, m.contact_milestone_property)
        if milestone is not None:
            outputs.append(
                SourceEvent(
                    source=SOURCE,
                    event_id=f"contact:{contact_id}:milestone:{milestone}",
                    type=EventType.USAGE_MILESTONE,
                    occurred_at=_timestamp(record, raw, MODIFIED["contacts"]),
                    account_id=account_id,
                    contact_id=contact_id,
                    milestone=milestone,
                )
            )
        return outputs

    def _deal(
        self,
        raw: JSON,
        deal_id: str,
        record: str,
        companies: Mapping[str, str | None],
        contacts: Mapping[str, str | None],
        domains: Mapping[str, str | None],
    ) -> list[Output]:
        m = self.mapping
        stage = _prop(raw, "dealstage")
        if stage is None:
            raise InputRejected(record, "dealstage", "missing")
        won = stage in m.won_stages
        if not won and stage not in m.qualified_stages:
            return []  # the search asks for these stages only; a stage renamed since
        amount = self._amount(record, raw)
        account_id = companies.get(deal_id)
        contact_id = contacts.get(deal_id)
        renewal = won and (
            _prop(raw, "dealtype") in m.renewal_deal_types
            or _prop(raw, "pipeline") in m.renewal_pipelines
        )
        code = None if renewal else _prop(raw, m.referral_code_property)
        domain = domains.get(contact_id) if code and contact_id else None

        def event(suffix: str, type_: EventType, at: datetime) -> SourceEvent:
            return SourceEvent(
                source=SOURCE,
                event_id=f"deal:{deal_id}:{suffix}",
                type=type_,
                occurred_at=at,
                account_id=account_id,
                contact_id=contact_id,
                amount=amount,
                referral_code=code,
                deal_id=deal_id,
                referee_email_domain=domain,
            )

        if not won:
            entered = self._entered(record, raw, (stage,))
            qualified_at = entered or _timestamp(record, raw, MODIFIED["deals"])
            return [event("qualified", EventType.DEAL_QUALIFIED, qualified_at)]
        closed = _timestamp(record, raw, "closedate")
        if renewal:
            return [event("renewal", EventType.RENEWAL, closed)]
        outputs: list[Output] = [event("won", EventType.DEAL_WON, closed)]
        if code is not None and m.qualified_stages:
            entered = self._entered(record, raw, m.qualified_stages)
            outputs.append(event("qualified", EventType.DEAL_QUALIFIED, entered or closed))
        return outputs

    def _entered(self, record: str, raw: JSON, stages: Iterable[str]) -> datetime | None:
        """When the deal first entered one of ``stages``, if HubSpot recorded it."""
        times = [
            _timestamp(record, raw, name)
            for stage in stages
            for name in _entered_properties(stage)
            if _prop(raw, name) is not None
        ]
        return min(times, default=None)

    def _amount(self, record: str, raw: JSON) -> Money | None:
        text = _prop(raw, "amount")
        if text is None:
            return None
        currency = (_prop(raw, "deal_currency_code") or self.mapping.default_currency or "").upper()
        if not currency:
            raise InputRejected(record, "deal_currency_code", "missing (the amount needs one)")
        try:
            exponent(currency)
        except InvalidAmount:
            raise InputRejected(
                record, "deal_currency_code", f"unsupported currency {currency!r}"
            ) from None
        try:
            amount = Money.parse(text, currency)
        except InvalidAmount as exc:
            raise InputRejected(record, "amount", str(exc)) from None
        if amount.amount_minor < 0:
            raise InputRejected(record, "amount", "negative amount")
        return amount

    def _ticket(
        self,
        raw: JSON,
        ticket_id: str,
        record: str,
        companies: Mapping[str, str | None],
        contacts: Mapping[str, str | None],
    ) -> list[Output]:
        csat_property = self.mapping.ticket_csat_property
        csat_text = _prop(raw, csat_property)
        csat: int | None = None
        if csat_text is not None:
            try:
                # Number properties may come back as "4" or "4.0". Checked as text
                # first: int(Decimal("1E100000000")) would build a 100-million-digit int.
                if _WHOLE.fullmatch(csat_text) is None:
                    raise InvalidOperation
                exact = Decimal(csat_text)
                if not exact.is_finite() or exact != exact.to_integral_value():
                    raise InvalidOperation
            except InvalidOperation:
                shown = csat_text if len(csat_text) <= 24 else csat_text[:24] + "..."
                raise InputRejected(
                    record, csat_property, f"{shown!r} is not a whole number"
                ) from None
            csat = int(exact)
            if not 1 <= csat <= 5:
                raise InputRejected(record, csat_property, f"{csat} is outside 1-5")
        priority = (_prop(raw, "hs_ticket_priority") or "").lower() or None
        opened_at = _timestamp(record, raw, "createdate")
        closed_at = (
            _timestamp(record, raw, "closed_date")
            if _prop(raw, "closed_date") is not None
            else None
        )

        def event(suffix: str, type_: EventType, at: datetime, score: int | None) -> SourceEvent:
            return SourceEvent(
                source=SOURCE,
                event_id=f"ticket:{ticket_id}:{suffix}",
                type=type_,
                occurred_at=at,
                account_id=companies.get(ticket_id),
                contact_id=contacts.get(ticket_id),
                csat=score,
                priority=priority,
                ticket_id=ticket_id,
            )

        outputs: list[Output] = [event("opened", EventType.TICKET_OPENED, opened_at, None)]
        if closed_at is not None:
            outputs.append(event("resolved", EventType.TICKET_RESOLVED, closed_at, csat))
        return outputs


class _Reader:
    """The HTTP side of one fetch: keyset-paged searches and association look-ups."""

    def __init__(
        self, http: JsonHttpClient, mapping: HubSpotMapping, page_size: int, upper_ms: int
    ) -> None:
        self._http = http
        self._mapping = mapping
        self._page_size = page_size
        self._upper_ms = upper_ms

    def changed(
        self, object_type: str, mark: _Mark, extra: Sequence[JSON] = ()
    ) -> tuple[list[object], _Mark]:
        """Every record of ``object_type`` modified since ``mark`` (and matching the
        ``extra`` filters), and the new mark.

        Each page starts where the previous one ended: at its newest modification time,
        skipping the ids already read at exactly that time. A full page that does not
        get past the time it started at means more records share that time than fit a
        page; those are read by id (:meth:`_same_time`), then the search goes on
        strictly after that time.
        """
        modified = MODIFIED[object_type]
        since, seen = mark.since_ms, set(mark.ids)
        strictly_after = False
        found: list[object] = []
        read: set[str] = set()
        extra = [*self._filters(object_type), *extra]
        while True:
            results = self._search(
                object_type,
                [
                    _filter(modified, "GT" if strictly_after else "GTE", since),
                    _filter(modified, "LT", self._upper_ms),
                    *extra,
                ],
                modified,
            )
            started_at = since
            for raw in results:
                object_id = _object_id(raw) if isinstance(raw, dict) else None
                stamp = _modified_ms(raw, modified)
                if stamp is not None and stamp == since and object_id in seen:
                    continue  # read by an earlier page or an earlier fetch
                if object_id is not None and object_id in read:
                    continue
                found.append(raw)
                if stamp is None or object_id is None:
                    continue  # refused by the mapping; cannot anchor a page
                read.add(object_id)
                if stamp > since:
                    since, seen, strictly_after = stamp, set(), False
                if stamp == since:
                    seen.add(object_id)
            if len(results) < self._page_size:
                break
            if since > started_at:
                continue
            if strictly_after:
                raise PermanentIntegrationError(
                    f"{SOURCE}: cannot page {object_type} past {modified} {since}: "
                    "a full page without a readable newer time"
                )
            for raw in self._same_time(object_type, since, seen | read, extra):
                found.append(raw)
                if isinstance(raw, dict) and (object_id := _object_id(raw)) is not None:
                    read.add(object_id)
                    seen.add(object_id)
            strictly_after = True
        return found, _Mark(since, frozenset(seen))

    def _same_time(
        self, object_type: str, since: int, seen: set[str], extra: Sequence[JSON]
    ) -> list[object]:
        """Every record modified exactly at ``since``, paged by ``hs_object_id``."""
        modified = MODIFIED[object_type]
        after_id = -1
        found: list[object] = []
        while True:
            results = self._search(
                object_type,
                [
                    _filter(modified, "EQ", since),
                    _filter("hs_object_id", "GT", after_id),
                    *extra,
                ],
                "hs_object_id",
            )
            newest = after_id
            for raw in results:
                object_id = _object_id(raw) if isinstance(raw, dict) else None
                if object_id is not None and object_id.isdigit():
                    newest = max(newest, int(object_id))
                if object_id in seen:
                    continue
                found.append(raw)
                if object_id is not None:
                    seen.add(object_id)
            if len(results) < self._page_size:
                return found
            if newest <= after_id:
                raise PermanentIntegrationError(
                    f"{SOURCE}: cannot page {object_type} modified at {since} by id"
                )
            after_id = newest

    def _filters(self, object_type: str) -> list[JSON]:
        if object_type != "deals":
            return []
        stages = sorted({*self._mapping.won_stages, *self._mapping.qualified_stages})
        return [{"propertyName": "dealstage", "operator": "IN", "values": stages}]

    def _search(self, object_type: str, filters: list[JSON], sort_by: str) -> list[object]:
        body = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort_by, "direction": "ASCENDING"}],
            "properties": self._mapping.properties(object_type),
            "limit": self._page_size,
        }
        answer = self._http.post(f"/crm/v3/objects/{object_type}/search", body)
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list):
            raise RetryableIntegrationError(
                f"{SOURCE}: the {object_type} search answer has no results list"
            )
        return results

    def associations(
        self, from_type: str, to_type: str, ids: Sequence[str]
    ) -> dict[str, list[tuple[str, frozenset[int]]]]:
        """``{from id: [(to id, association type ids)]}`` for ``ids`` (at most 100).

        Only the first page of each record's associations is read (HubSpot pages them
        by 500): more companies or contacts than that on one deal or ticket is not a
        case this program meets.
        """
        if not ids:
            return {}
        answer = self._http.post(
            f"/crm/v4/associations/{from_type}/{to_type}/batch/read",
            {"inputs": [{"id": i} for i in ids]},
        )
        found: dict[str, list[tuple[str, frozenset[int]]]] = {}
        results = answer.get("results") if isinstance(answer, dict) else None
        for result in results if isinstance(results, list) else []:
            source = result.get("from") if isinstance(result, dict) else None
            source_id = source.get("id") if isinstance(source, dict) else None
            targets = result.get("to") if isinstance(result, dict) else None
            if source_id is None or not isinstance(targets, list):
                continue
            pairs = found.setdefault(str(source_id), [])
            for target in targets:
                if not isinstance(target, dict) or target.get("toObjectId") is None:
                    continue
                types = frozenset(
                    t["typeId"]
                    for t in target.get("associationTypes") or []
                    if isinstance(t, dict) and isinstance(t.get("typeId"), int)
                )
                pairs.append((str(target["toObjectId"]), types))
        return found

    def email_domains(self, contact_ids: Sequence[str]) -> dict[str, str | None]:
        """The email domain of each contact in ``contact_ids``; the address is not kept."""
        domains: dict[str, str | None] = {}
        for start in range(0, len(contact_ids), MAX_PAGE_SIZE):
            chunk = contact_ids[start : start + MAX_PAGE_SIZE]
            answer = self._http.post(
                "/crm/v3/objects/contacts/batch/read",
                {"properties": ["email"], "inputs": [{"id": i} for i in chunk]},
            )
            results = answer.get("results") if isinstance(answer, dict) else None
            for result in results if isinstance(results, list) else []:
                if isinstance(result, dict) and (contact_id := _object_id(result)):
                    domains[contact_id] = _domain(_prop(result, "email"))
        return domains


# -- values ---------------------------------------------------------------------------


def _filter(name: str, operator: str, value: int) -> JSON:
    return {"propertyName": name, "operator": operator, "value": str(value)}


def _object_id(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("id")
    if value is None or isinstance(value, bool) or not str(value).strip():
        return None
    return str(value).strip()


def _prop(raw: Mapping[str, Any], name: str | None) -> str | None:
    if name is None:
        return None
    properties = raw.get("properties")
    value = properties.get(name) if isinstance(properties, dict) else None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _parse_time(text: str) -> datetime:
    """A HubSpot date or datetime: ISO 8601, a date alone (UTC midnight), or epoch ms."""
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        # HubSpot stores times in UTC; date properties come as a bare date.
        value = value.replace(tzinfo=UTC)
    return value


def _timestamp(record: str, raw: Mapping[str, Any], name: str) -> datetime:
    text = _prop(raw, name)
    if text is None:
        raise InputRejected(record, name, "missing")
    try:
        return _parse_time(text)
    except (ValueError, OverflowError, OSError):
        raise InputRejected(record, name, f"{text!r} is not a date or time") from None


def _modified_ms(raw: object, name: str) -> int | None:
    if not isinstance(raw, dict):
        return None
    text = _prop(raw, name)
    if text is None:
        return None
    try:
        return _ms(_parse_time(text))
    except (ValueError, OverflowError, OSError):
        return None


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _pick(pairs: Sequence[tuple[str, frozenset[int]]], primary: int | None) -> str | None:
    """The primary association if one is labelled so, else the lowest id."""
    labelled = [i for i, types in pairs if primary is not None and primary in types]
    pool = labelled or [i for i, _ in pairs]
    return min(pool, key=_id_order, default=None)


def _id_order(object_id: str) -> tuple[int, int, str]:
    return (0, int(object_id), "") if object_id.isdigit() else (1, 0, object_id)


def _domain(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.rsplit("@", 1)[1].strip().lower() or None


def _raw_text(raw: object) -> str:
    """The record as compact JSON with every address masked, cut short, for the
    quarantine."""
    try:
        text = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = repr(raw)
    text = mask_emails(text)
    return text if len(text) <= MAX_RAW_CHARS else text[: MAX_RAW_CHARS - 3] + "..."


def _load_cursor(cursor: str | None) -> dict[str, _Mark]:
    marks = {t: _Mark() for t in OBJECT_TYPES}
    if cursor is None:
        return marks
    try:
        data = json.loads(cursor)
        if data.get("v") != _CURSOR_VERSION:
            raise ValueError("unknown version")
        for object_type in OBJECT_TYPES:
            entry = data.get(object_type)
            if entry is None:
                continue
            since = entry["since"]
            ids = entry["ids"]
            if not isinstance(since, int) or not all(isinstance(i, str) for i in ids):
                raise ValueError("wrong types")
            marks[object_type] = _Mark(since, frozenset(ids))
    except (ValueError, TypeError, KeyError, AttributeError):
        raise PermanentIntegrationError(
            f"{SOURCE}: the stored cursor is not one this source wrote"
        ) from None
    return marks


def _dump_cursor(marks: Mapping[str, _Mark]) -> str:
    data: dict[str, Any] = {"v": _CURSOR_VERSION}
    for object_type in OBJECT_TYPES:
        mark = marks[object_type]
        data[object_type] = {"since": mark.since_ms, "ids": sorted(mark.ids, key=_id_order)}
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
