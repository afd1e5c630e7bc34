"""The HubSpot source over real HTTP, against the local fake of HubSpot's CRM API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.models import Account, Contact, EventType, ReferrerType, SourceEvent
from domain.money import Money
from domain.ports import ClaimRow, EventSource, RegistrationSource, SourceBatch
from integrations.sources.http import EMAIL_PATTERN
from integrations.sources.hubspot import HubSpotMapping, HubSpotSource
from tests.fakes.hubspot_server import FakeHubSpot, iso

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DEALS = "POST /crm/v3/objects/deals/search"
COMPANIES = "POST /crm/v3/objects/companies/search"

SourceFactory = Callable[..., HubSpotSource]


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(now=NOW) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_source(fake: FakeHubSpot, sleeps: list[float]) -> SourceFactory:
    def make(**overrides: Any) -> HubSpotSource:
        kwargs: dict[str, Any] = {
            # Two minutes after the fake's now: past the default one-minute settle.
            "clock": lambda: fake.now + timedelta(minutes=2),
            "sleep": sleeps.append,
            "timeout": 5.0,
        }
        kwargs.update(overrides)
        token = kwargs.pop("access_token", fake.access_token)
        return HubSpotSource(token, fake.url, **kwargs)

    return make


def balanced(batch: SourceBatch) -> SourceBatch:
    """``batch``, after checking that every record read is accounted for."""
    assert batch.records_in == len(batch.events) + len(batch.rejected) + batch.reference_only
    assert batch.reference_only >= len(batch.accounts) + len(batch.contacts)
    return batch


def events(batch: SourceBatch) -> dict[str, SourceEvent]:
    return {e.event_id: e for e in batch.events}


def search_bodies(fake: FakeHubSpot, object_type: str) -> list[dict[str, Any]]:
    path = f"/crm/v3/objects/{object_type}/search"
    return [r.body for r in fake.requests if r.path == path]


# -- the port ---------------------------------------------------------------------------


def test_the_source_is_an_event_source_named_hubspot(make_source: SourceFactory) -> None:
    source = make_source()

    assert isinstance(source, EventSource)
    assert source.name == "hubspot"


def test_an_empty_portal_gives_an_empty_balanced_batch_with_a_cursor(
    make_source: SourceFactory,
) -> None:
    batch = balanced(make_source().fetch(None))

    assert batch.source == "hubspot"
    assert batch.records_in == 0
    assert batch.cursor is not None


# -- mapping ----------------------------------------------------------------------------


def test_companies_become_accounts_with_the_date_they_became_customers(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    lifecycle = fake.add_company(
        name="Acme GmbH",
        domain="ACME.example",
        customer_since=datetime(2024, 3, 5, 14, 0, tzinfo=UTC),
    )
    by_deal = fake.add_company(name="Beta", customer_since=None, closedate="2025-01-31")
    unnamed = fake.add_company(name=None, domain=None)

    batch = balanced(make_source().fetch(None))

    assert {a.account_id: a for a in batch.accounts} == {
        lifecycle: Account(lifecycle, "Acme GmbH", "acme.example", date(2024, 3, 5)),
        by_deal: Account(by_deal, "Beta", "acme.example", date(2025, 1, 31)),
        unnamed: Account(unnamed, unnamed, None, None),
    }
    assert batch.reference_only == 3


def test_contacts_become_contacts_with_company_referrer_type_and_opt_out(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    company = fake.add_company()
    partner = fake.add_contact(
        email="ada@acme.example", company_id=company, referrer_type="Partner", opted_out=True
    )
    plain = fake.add_contact(
        email=None, firstname="Bob", lastname=None, opted_out=None, referrer_type=None
    )

    batch = balanced(make_source().fetch(None))

    assert {c.contact_id: c for c in batch.contacts} == {
        partner: Contact(
            partner, company, "Ada Martin", "ada@acme.example", ReferrerType.PARTNER, True
        ),
        plain: Contact(plain, None, "Bob", None, ReferrerType.CUSTOMER, False),
    }


def test_stripe_ids_are_read_from_the_contact_properties_the_mapping_names(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    contact = fake.add_contact(stripe_customer="cus_Q1", stripe_connect="acct_1Q2")
    mapping = HubSpotMapping(
        stripe_customer_id_property="stripe_customer", stripe_account_id_property="stripe_connect"
    )

    [read] = balanced(make_source(mapping=mapping).fetch(None)).contacts

    assert (read.contact_id, read.stripe_customer_id, read.stripe_account_id) == (
        contact,
        "cus_Q1",
        "acct_1Q2",
    )


def test_a_closed_won_deal_is_a_deal_won_with_its_amount_primary_company_and_contact(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    other = fake.add_company(name="Reseller")
    buyer = fake.add_company(name="Buyer")
    second, first = fake.add_contact("902"), fake.add_contact("901")
    closed = datetime(2026, 10, 30, 16, 45, tzinfo=UTC)
    deal = fake.add_deal(
        stage="closedwon",
        amount="12500.50",
        currency="EUR",
        closedate=closed,
        company_id=other,
        primary_company=False,
        contact_ids=[second, first],
    )
    fake.associate("deals", deal, "companies", buyer, [5, 341])

    won = events(balanced(make_source().fetch(None)))[f"deal:{deal}:won"]

    assert won == SourceEvent(
        source="hubspot",
        event_id=f"deal:{deal}:won",
        type=EventType.DEAL_WON,
        occurred_at=closed,
        account_id=buyer,
        contact_id=first,
        amount=Money(1_250_050, "EUR"),
        deal_id=deal,
    )


def test_a_won_deal_with_a_referral_code_is_a_conversion_with_its_qualified_milestone(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    referee = fake.add_contact(email="lea@newco.example")
    entered = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)
    deal = fake.add_deal(
        referral_code="ADA-7Q2K",
        contact_ids=[referee],
        hs_date_entered_qualifiedtobuy=iso(entered),
    )

    found = events(balanced(make_source().fetch(None)))

    won, qualified = found[f"deal:{deal}:won"], found[f"deal:{deal}:qualified"]
    assert won.referral_code == qualified.referral_code == "ADA-7Q2K"
    assert won.referee_email_domain == qualified.referee_email_domain == "newco.example"
    assert qualified.type is EventType.DEAL_QUALIFIED
    assert qualified.occurred_at == entered
    assert won.occurred_at == NOW


def test_a_referred_deal_finds_the_domain_of_a_contact_read_in_an_earlier_fetch(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    source = make_source()
    referee = fake.add_contact(email="lea@newco.example")
    first = source.fetch(None)
    fake.advance(minutes=5)
    deal = fake.add_deal(referral_code="ADA-7Q2K", contact_ids=[referee])

    second = balanced(source.fetch(first.cursor))

    assert second.contacts == []
    assert events(second)[f"deal:{deal}:won"].referee_email_domain == "newco.example"
    reads = [r for r in fake.requests if r.path == "/crm/v3/objects/contacts/batch/read"]
    assert [r.body for r in reads] == [{"properties": ["email"], "inputs": [{"id": referee}]}]


def test_a_deal_in_a_qualified_stage_is_a_deal_qualified_dated_when_it_entered_it(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    entered = datetime(2026, 10, 20, tzinfo=UTC)
    dated = fake.add_deal(
        stage="qualifiedtobuy", referral_code="ADA-7Q2K", hs_v2_date_entered_qualifiedtobuy=entered
    )
    undated = fake.add_deal(stage="qualifiedtobuy", modified_at=NOW - timedelta(hours=1))

    found = events(balanced(make_source().fetch(None)))

    assert found[f"deal:{dated}:qualified"].occurred_at == entered
    assert found[f"deal:{dated}:qualified"].referral_code == "ADA-7Q2K"
    assert found[f"deal:{undated}:qualified"].occurred_at == NOW - timedelta(hours=1)
    assert not any(e.type is EventType.DEAL_WON for e in found.values())


def test_a_won_deal_of_a_renewal_type_or_pipeline_is_a_renewal(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    by_type = fake.add_deal(dealtype="renewal", referral_code="ADA-7Q2K")
    by_pipeline = fake.add_deal(pipeline="renewals", stage="8812")
    new_business = fake.add_deal(dealtype="newbusiness")
    mapping = HubSpotMapping(won_stages=("closedwon", "8812"), renewal_pipelines=("renewals",))

    found = events(balanced(make_source(mapping=mapping).fetch(None)))

    assert found[f"deal:{by_type}:renewal"].type is EventType.RENEWAL
    assert found[f"deal:{by_type}:renewal"].referral_code is None
    assert found[f"deal:{by_pipeline}:renewal"].type is EventType.RENEWAL
    assert found[f"deal:{new_business}:won"].type is EventType.DEAL_WON
    assert len(found) == 3


def test_only_deals_in_a_stage_the_program_reads_are_asked_for(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    fake.add_deal(stage="appointmentscheduled")
    fake.add_deal(stage="closedlost")
    won = fake.add_deal(stage="closedwon")

    batch = balanced(make_source().fetch(None))

    assert list(events(batch)) == [f"deal:{won}:won"]
    stage_filter = {"propertyName": "dealstage", "operator": "IN"}
    filters = search_bodies(fake, "deals")[0]["filterGroups"][0]["filters"]
    assert {**stage_filter, "values": ["closedwon", "qualifiedtobuy"]} in filters


def test_an_amount_without_currency_takes_the_configured_default(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    deal = fake.add_deal(amount="900", currency=None)

    batch = balanced(make_source(mapping=HubSpotMapping(default_currency="GBP")).fetch(None))

    assert events(batch)[f"deal:{deal}:won"].amount == Money(90_000, "GBP")


def test_an_open_ticket_is_a_ticket_opened_with_its_priority(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    company, contact = fake.add_company(), fake.add_contact()
    opened = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    ticket = fake.add_ticket(
        priority="URGENT", createdate=opened, company_id=company, contact_ids=[contact]
    )

    batch = balanced(make_source().fetch(None))

    assert events(batch)[f"ticket:{ticket}:opened"] == SourceEvent(
        source="hubspot",
        event_id=f"ticket:{ticket}:opened",
        type=EventType.TICKET_OPENED,
        occurred_at=opened,
        account_id=company,
        contact_id=contact,
        priority="urgent",
        ticket_id=ticket,
    )
    assert f"ticket:{ticket}:resolved" not in events(batch)


def test_a_closed_ticket_is_opened_and_resolved_with_its_csat(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    company = fake.add_company()
    opened, closed = NOW - timedelta(days=2), NOW - timedelta(hours=3)
    ticket = fake.add_ticket(
        priority="HIGH", createdate=opened, closed_date=closed, csat="5.0", company_id=company
    )

    batch = balanced(make_source().fetch(None))

    found = events(batch)
    resolved = found[f"ticket:{ticket}:resolved"]
    assert (resolved.type, resolved.occurred_at, resolved.csat) == (
        EventType.TICKET_RESOLVED,
        closed,
        5,
    )
    assert (resolved.account_id, resolved.priority, resolved.ticket_id) == (company, "high", ticket)
    assert found[f"ticket:{ticket}:opened"].occurred_at == opened
    # One ticket, two facts: two records.
    assert batch.records_in == 3


def test_a_usage_milestone_property_becomes_a_usage_milestone_event(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    company = fake.add_company(usage_milestone="1000 projects")
    contact = fake.add_contact(company_id=company, usage_milestone="first export")
    fake.add_contact(usage_milestone="  ")

    batch = balanced(make_source().fetch(None))

    found = events(batch)
    assert set(found) == {
        f"company:{company}:milestone:1000 projects",
        f"contact:{contact}:milestone:first export",
    }
    by_contact = found[f"contact:{contact}:milestone:first export"]
    assert (by_contact.type, by_contact.contact_id, by_contact.account_id) == (
        EventType.USAGE_MILESTONE,
        contact,
        company,
    )
    assert by_contact.milestone == "first export"
    assert found[f"company:{company}:milestone:1000 projects"].contact_id is None


def test_event_ids_stay_the_same_when_a_record_is_read_again(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    source = make_source()
    deal = fake.add_deal()
    first = source.fetch(None)
    fake.advance(minutes=1)
    fake.touch("deals", deal, amount="13000.00")

    second = balanced(source.fetch(first.cursor))

    assert [e.event_id for e in first.events] == [e.event_id for e in second.events]
    assert second.events[0].amount == Money(1_300_000, "EUR")


# -- paging and the cursor --------------------------------------------------------------


def test_paging_reads_every_record_across_several_pages(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    deals = []
    for _ in range(7):
        deals.append(fake.add_deal())
        fake.advance(seconds=1)

    batch = balanced(make_source(page_size=3).fetch(None))

    assert sorted(e.deal_id or "" for e in batch.events) == sorted(deals)
    bodies = search_bodies(fake, "deals")
    # Each page starts at the newest time of the one before, which it reads again.
    assert len(bodies) == 4
    assert all(body["limit"] == 3 and "after" not in body for body in bodies)
    assert bodies[0]["sorts"] == [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}]


def test_more_changes_than_a_search_can_return_are_all_read() -> None:
    # The fake stands for HubSpot's 10,000-result cap with a cap of 5: paging past it
    # with `after` is a 400, so only keyset pages can get through.
    with FakeHubSpot(now=NOW, max_results=5) as capped:
        deals = []
        for _ in range(12):
            deals.append(capped.add_deal())
            capped.advance(seconds=1)
        source = HubSpotSource(
            capped.access_token,
            capped.url,
            page_size=2,
            clock=lambda: capped.now + timedelta(minutes=2),
        )

        batch = balanced(source.fetch(None))

    assert sorted(e.deal_id or "" for e in batch.events) == sorted(deals)


def test_the_fake_pages_with_after_and_refuses_to_page_past_its_cap_as_hubspot_does() -> None:
    with FakeHubSpot(now=NOW, max_results=5) as capped, requests.Session() as http:
        for _ in range(7):
            capped.add_deal()
        url = f"{capped.url}/crm/v3/objects/deals/search"
        auth = {"Authorization": f"Bearer {capped.access_token}"}

        first = http.post(url, json={"limit": 3}, headers=auth).json()
        second = http.post(url, json={"limit": 3, "after": "3"}, headers=auth).json()
        beyond = http.post(url, json={"limit": 3, "after": "5"}, headers=auth)

    assert (first["total"], len(first["results"]), first["paging"]["next"]["after"]) == (7, 3, "3")
    assert (len(second["results"]), "paging" in second) == (2, False)
    assert beyond.status_code == 400
    assert beyond.json()["category"] == "VALIDATION_ERROR"


def test_a_second_fetch_with_the_returned_cursor_reads_only_what_changed(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    source = make_source()
    kept, changed = fake.add_deal(), fake.add_deal()
    contact = fake.add_contact()
    first = source.fetch(None)
    fake.advance(minutes=10)
    fake.touch("deals", changed, amount="99.00")
    added = fake.add_deal()

    second = balanced(source.fetch(first.cursor))

    assert sorted(e.deal_id or "" for e in second.events) == sorted([changed, added])
    assert kept not in {e.deal_id for e in second.events}
    assert contact not in {c.contact_id for c in second.contacts}
    assert second.records_in == 2


def test_a_fetch_when_nothing_changed_reads_nothing_and_keeps_the_cursor(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    source = make_source()
    fake.add_company()
    fake.add_contact()
    fake.add_deal()
    fake.add_ticket()
    first = source.fetch(None)
    fake.advance(hours=1)

    second = balanced(source.fetch(first.cursor))

    assert second.records_in == 0
    assert second.cursor == first.cursor


def test_a_record_modified_at_exactly_the_cursor_time_is_not_lost(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    source = make_source()
    at = NOW - timedelta(minutes=30)
    fake.add_deal(modified_at=at)
    first = source.fetch(None)
    assert json.loads(first.cursor or "")["deals"]["since"] == int(at.timestamp() * 1000)

    # Written in the same millisecond, or indexed by HubSpot's search after the read.
    late = fake.add_deal(modified_at=at)
    second = balanced(source.fetch(first.cursor))

    assert [e.deal_id for e in second.events] == [late]
    assert balanced(source.fetch(second.cursor)).records_in == 0


def test_more_records_sharing_one_time_than_fit_a_page_are_all_read_once(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    source = make_source(page_size=3)
    deals = [fake.add_deal() for _ in range(8)]
    fake.advance(seconds=1)
    after = fake.add_deal()

    first = balanced(source.fetch(None))

    assert sorted(e.deal_id or "" for e in first.events) == sorted([*deals, after])
    assert len(first.events) == 9
    assert balanced(source.fetch(first.cursor)).records_in == 0


def test_changes_in_the_settle_period_wait_for_the_next_fetch(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    clock = {"now": NOW + timedelta(seconds=30)}
    source = make_source(clock=lambda: clock["now"], settle=timedelta(minutes=1))
    deal = fake.add_deal()

    early = balanced(source.fetch(None))
    clock["now"] = NOW + timedelta(minutes=5)
    later = balanced(source.fetch(early.cursor))

    assert early.events == []
    assert [e.deal_id for e in later.events] == [deal]
    upper = search_bodies(fake, "deals")[0]["filterGroups"][0]["filters"][1]
    assert upper == {
        "propertyName": "hs_lastmodifieddate",
        "operator": "LT",
        "value": str(int((NOW - timedelta(seconds=30)).timestamp() * 1000)),
    }


def test_a_stored_cursor_this_source_did_not_write_is_refused(
    make_source: SourceFactory,
) -> None:
    with pytest.raises(PermanentIntegrationError, match="cursor"):
        make_source().fetch('{"files.csv": "abc"}')


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 2)),
            st.tuples(st.just("touch"), st.integers(0, 50)),
            st.just(("fetch", 0)),
        ),
        max_size=25,
    ),
    page_size=st.integers(1, 4),
)
def test_every_change_is_read_exactly_once_whatever_the_ties_and_page_size(
    steps: list[tuple[str, int]], page_size: int
) -> None:
    # Times advance by 0-2 ms per step, so ties with the cursor and across pages are common.
    with FakeHubSpot(now=NOW) as hub:
        source = HubSpotSource(
            hub.access_token,
            hub.url,
            page_size=page_size,
            settle=timedelta(0),
            clock=lambda: hub.now + timedelta(milliseconds=1),
        )
        deals: list[str] = []
        versions_read: list[tuple[str, str]] = []
        cursor = None

        def fetch() -> None:
            nonlocal cursor
            batch = balanced(source.fetch(cursor))
            cursor = batch.cursor
            for event in batch.events:
                modified = hub.record("deals", event.deal_id or "")["updatedAt"]
                versions_read.append((event.deal_id or "", modified))

        for action, number in [*steps, ("fetch", 0)]:
            if action == "add":
                hub.advance(milliseconds=number)
                deals.append(hub.add_deal())
            elif action == "touch" and deals:
                hub.advance(milliseconds=1)  # a record's time moves on when it changes
                hub.touch("deals", deals[number % len(deals)])
            elif action == "fetch":
                fetch()

        current = {(d, hub.record("deals", d)["updatedAt"]) for d in deals}
        assert current <= set(versions_read)
        assert len(versions_read) == len(set(versions_read))


# -- HTTP failures ----------------------------------------------------------------------


def test_a_429_is_retried_after_the_delay_retry_after_asks_for(
    fake: FakeHubSpot, make_source: SourceFactory, sleeps: list[float]
) -> None:
    deal = fake.add_deal()
    fake.script(DEALS, [429])

    batch = balanced(make_source().fetch(None))

    assert [e.deal_id for e in batch.events] == [deal]
    assert sleeps == [2.0]
    assert fake.count(DEALS, status=429) == 1


def test_server_errors_are_retried_with_backoff_then_the_fetch_succeeds(
    fake: FakeHubSpot, make_source: SourceFactory, sleeps: list[float]
) -> None:
    company = fake.add_company()
    fake.script(COMPANIES, [500, 503])

    batch = balanced(make_source().fetch(None))

    assert [a.account_id for a in batch.accounts] == [company]
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("fault", ["malformed_json", "drop"])
def test_a_garbled_answer_or_a_dropped_connection_is_retried(
    fake: FakeHubSpot, make_source: SourceFactory, sleeps: list[float], fault: str
) -> None:
    deal = fake.add_deal()
    fake.script(DEALS, [fault])

    batch = balanced(make_source().fetch(None))

    assert [e.deal_id for e in batch.events] == [deal]
    assert sleeps == [0.5]


def test_association_reads_are_retried_too(
    fake: FakeHubSpot, make_source: SourceFactory, sleeps: list[float]
) -> None:
    company = fake.add_company()
    deal = fake.add_deal(company_id=company)
    fake.script("POST /crm/v4/associations/deals/companies/batch/read", [429, 502])

    batch = balanced(make_source().fetch(None))

    assert events(batch)[f"deal:{deal}:won"].account_id == company
    assert sleeps == [2.0, 1.0]


def test_exhausted_retries_fail_the_fetch_as_retryable(
    fake: FakeHubSpot, make_source: SourceFactory, sleeps: list[float]
) -> None:
    fake.add_deal()
    fake.script(DEALS, [503, 503, 503])

    with pytest.raises(RetryableIntegrationError, match="deals/search: HTTP 503 after 3"):
        make_source(max_attempts=3).fetch(None)

    assert fake.count(DEALS) == 3
    assert sleeps == [0.5, 1.0]


def test_a_refused_token_is_a_permanent_error_that_does_not_name_the_token(
    fake: FakeHubSpot, make_source: SourceFactory, sleeps: list[float]
) -> None:
    wrong = "pat-na1-99999999-aaaa-bbbb-cccc-dddddddddddd"

    with pytest.raises(PermanentIntegrationError, match="HTTP 401") as caught:
        make_source(access_token=wrong).fetch(None)

    assert wrong not in str(caught.value)
    assert fake.access_token not in str(caught.value)
    assert fake.count() == 1
    assert sleeps == []


# -- malformed records ------------------------------------------------------------------


def _with(fake: FakeHubSpot, object_type: str, record_id: str, **properties: object) -> str:
    """``record_id`` after overwriting ``properties`` with raw (malformed) text."""
    fake.touch(object_type, record_id, at=fake.now, **properties)
    return record_id


MALFORMED: list[tuple[str, Callable[[FakeHubSpot], str], str, str]] = [
    ("deal", lambda f: f.add_deal(amount="12,5"), "amount", "'12,5' is not an amount"),
    ("deal", lambda f: f.add_deal(amount="10.005"), "amount", "more decimals"),
    ("deal", lambda f: f.add_deal(amount="-5.00"), "amount", "negative amount"),
    (
        "deal",
        lambda f: f.add_deal(currency="XYZ"),
        "deal_currency_code",
        "unsupported currency 'XYZ'",
    ),
    ("deal", lambda f: f.add_deal(currency=None), "deal_currency_code", "missing"),
    (
        "deal",
        lambda f: _with(f, "deals", f.add_deal(), closedate="next tuesday"),
        "closedate",
        "'next tuesday' is not a date or time",
    ),
    ("ticket", lambda f: f.add_ticket(csat=7, closed_date=NOW), "csat_score", "7 is outside 1-5"),
    ("ticket", lambda f: f.add_ticket(csat="great"), "csat_score", "'great' is not a whole number"),
    ("ticket", lambda f: f.add_ticket(csat="4.5"), "csat_score", "'4.5' is not a whole number"),
    (
        "ticket",
        lambda f: f.add_ticket(csat="1E100000000"),
        "csat_score",
        "'1E100000000' is not a whole number",
    ),
    (
        "ticket",
        lambda f: f.add_ticket(csat="\u0664"),
        "csat_score",
        "'\u0664' is not a whole number",
    ),
    (
        "ticket",
        lambda f: _with(f, "tickets", f.add_ticket(), createdate="soon"),
        "createdate",
        "'soon' is not a date or time",
    ),
    ("contact", lambda f: f.add_contact(email="ada at acme"), "email", "not an email address"),
    ("contact", lambda f: f.add_contact(email="a@b@c.com"), "email", "not an email address"),
    (
        "contact",
        lambda f: f.add_contact(referrer_type="vendor"),
        "referrer_type",
        "'vendor' is not customer/partner/employee",
    ),
    (
        "contact",
        lambda f: f.add_contact(opted_out=None, hs_email_optout="maybe"),
        "hs_email_optout",
        "'maybe' is not true/false",
    ),
    (
        "company",
        lambda f: f.add_company(hs_lifecyclestage_customer_date="last spring"),
        "hs_lifecyclestage_customer_date",
        "'last spring' is not a date or time",
    ),
]


@pytest.mark.parametrize(
    ("kind", "make", "field", "reason"), MALFORMED, ids=[m[2] + ":" + m[3] for m in MALFORMED]
)
def test_a_malformed_record_is_quarantined_with_its_field_while_the_rest_goes_on(
    fake: FakeHubSpot,
    make_source: SourceFactory,
    kind: str,
    make: Callable[[FakeHubSpot], str],
    field: str,
    reason: str,
) -> None:
    good_before = fake.add_deal()
    bad = make(fake)
    good_after = fake.add_deal()

    batch = balanced(make_source().fetch(None))

    [rejected] = batch.rejected
    assert (rejected.source, rejected.record, rejected.field) == (
        "hubspot",
        f"hubspot:{kind}:{bad}",
        field,
    )
    assert reason in rejected.reason
    assert {f"deal:{good_before}:won", f"deal:{good_after}:won"} <= set(events(batch))
    assert bad not in {e.deal_id or e.ticket_id for e in batch.events}


def test_a_record_without_an_id_is_quarantined(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    good = fake.add_deal()
    fake.add_raw(
        "deals",
        {"properties": {"dealstage": "closedwon", "hs_lastmodifieddate": iso(NOW)}},
    )

    batch = balanced(make_source().fetch(None))

    assert [(r.record, r.field, r.reason) for r in batch.rejected] == [
        ("hubspot:deal:?", "id", "missing")
    ]
    assert [e.deal_id for e in batch.events] == [good]


def test_no_rejected_reason_or_raw_text_holds_an_email_address(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    fake.add_contact(email="ada lovelace@acme.example")
    fake.add_contact(email="bob@beta.example", referrer_type="bob@beta.example")
    fake.add_contact(email="cy@gamma.example", opted_out=None, hs_email_optout="cy@gamma.example")
    fake.add_deal(amount="dee@delta.example")
    fake.add_ticket(csat="eve@epsilon.example")

    batch = balanced(make_source().fetch(None))

    assert len(batch.rejected) == 5
    for rejected in batch.rejected:
        assert EMAIL_PATTERN.search(rejected.reason) is None, rejected.reason
        assert EMAIL_PATTERN.search(rejected.raw) is None, rejected.raw
        assert "<email>" in rejected.raw or "<email>" in rejected.reason


def test_counts_balance_over_a_mixed_portal(fake: FakeHubSpot, make_source: SourceFactory) -> None:
    company = fake.add_company(usage_milestone="100 seats")
    contact = fake.add_contact(company_id=company)
    fake.add_contact(email="broken")
    fake.add_deal(company_id=company, contact_ids=[contact], referral_code="ADA-7Q2K")
    fake.add_deal(stage="qualifiedtobuy")
    fake.add_deal(amount="oops")
    fake.add_ticket(closed_date=NOW, csat=4)
    fake.add_ticket()

    batch = balanced(make_source(page_size=2).fetch(None))

    # company: account + milestone; 2 contacts (1 refused); referred won deal: won +
    # qualified; qualified deal; refused deal; closed ticket: 2; open ticket: 1.
    assert batch.records_in == 2 + 2 + 2 + 1 + 1 + 2 + 1
    assert (len(batch.events), len(batch.rejected), batch.reference_only) == (7, 2, 2)


# -- partner registrations --------------------------------------------------------------

REGISTERED = HubSpotMapping(registration_partner_property="partner_registration_partner")


def registration(partner: str | None, **changes: object) -> dict[str, Any]:
    return {
        "partner_registration_partner": partner,
        "partner_registration_date": "2026-10-20",
        "partner_registration_contact": "lead@acme.example",
        "partner_registration_evidence": "Discovery call with the CFO, budget approved",
    } | changes


def test_registered_companies_become_claims_read_by_their_own_search_and_cursor(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    acme = fake.add_company(domain="acme.example", **registration("9001"))
    fake.add_company(name="Not registered", domain="plain.example")
    source = make_source(mapping=REGISTERED)

    read = source.fetch_registrations(None)
    nothing_new = source.fetch_registrations(read.cursor)
    fake.advance(minutes=5)
    fake.touch("companies", acme, partner_registration_evidence="Pilot signed for 40 seats")
    changed = make_source(mapping=REGISTERED).fetch_registrations(read.cursor)

    assert isinstance(source, RegistrationSource)
    assert read.claims == [
        ClaimRow(
            record=f"hubspot:company:{acme}",
            partner_id="9001",
            domain="acme.example",
            contact="lead@acme.example",
            evidence="Discovery call with the CFO, budget approved",
            registered_at=datetime(2026, 10, 20, tzinfo=UTC),
        )
    ]
    assert (read.rejected, nothing_new.claims) == ([], [])
    # The same registration again, with the same date: the ledger keeps it once.
    assert [(c.record, c.registered_at) for c in changed.claims] == [
        (f"hubspot:company:{acme}", datetime(2026, 10, 20, tzinfo=UTC))
    ]
    [body] = search_bodies(fake, "companies")[:1]
    filters = body["filterGroups"][0]["filters"]
    assert {"propertyName": "partner_registration_partner", "operator": "HAS_PROPERTY"} in filters


def test_a_registration_without_a_date_is_refused_naming_the_company_and_property(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    undated = fake.add_company(
        domain="beta.example", **registration("9001", partner_registration_date=None)
    )
    garbled = fake.add_company(
        domain="gamma.example", **registration("9002", partner_registration_date="soon")
    )
    fake.add_company(domain="delta.example", **registration("9003"))

    read = make_source(mapping=REGISTERED).fetch_registrations(None)

    assert [c.domain for c in read.claims] == ["delta.example"]
    assert [(r.record, r.field, r.raw) for r in read.rejected] == [
        (f"hubspot:company:{undated}", "partner_registration_date", ""),
        (f"hubspot:company:{garbled}", "partner_registration_date", ""),
    ]


def test_without_a_partner_property_no_registration_is_read_and_nothing_is_asked(
    fake: FakeHubSpot, make_source: SourceFactory
) -> None:
    fake.add_company(domain="acme.example", **registration("9001"))

    read = make_source().fetch_registrations("previous")

    assert (list(read.claims), list(read.rejected), read.cursor) == ([], [], "previous")
    assert fake.requests == []
