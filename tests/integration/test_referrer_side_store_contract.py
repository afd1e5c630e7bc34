"""The referrer side's stores and their in-memory fakes keep the same promises.

Every scenario runs on the SQL stores (SQLite, and PostgreSQL when configured) and on
the fakes of :mod:`integrations.ledger.memory`, asserting the same answers: reward
choices (latest wins), the referrer's own visitors (each pair kept once), fresh page link
requests (counted per keyed hash in a window), and connected accounts (one per
referrer, its key stored first, its account id set once, its states logged forward).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from domain.connect import AccountState, ConnectStatus, account_key
from domain.errors import PermanentIntegrationError
from domain.models import Contact, Milestone, PayoutRailKind, RewardStatus
from domain.money import Money
from domain.program import RewardChoice
from domain.referrer_page import ConversionStep, PayoutLine, RewardLine
from integrations.ledger.engine import make_engine
from integrations.ledger.memory import InMemoryStores
from integrations.ledger.sql import SqlLedger
from tests.conftest import contact, people_batch

VISITOR_1, VISITOR_2 = "a" * 64, "b" * 64
ADDRESS_1, ADDRESS_2 = "c" * 64, "d" * 64


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "memory"])
def stores(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The SQL stores (built as the ``ledger`` fixture builds them) or the fakes."""
    if request.param == "memory":
        yield InMemoryStores()
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    engine = make_engine(str(url))
    yield SqlLedger(engine)
    engine.dispose()


def given_contacts(stores: Any, now: datetime, *people: Contact) -> None:
    """Contacts as the sources area writes them (seeded directly into the fakes)."""
    if isinstance(stores, InMemoryStores):
        for person in people:
            stores.referrer_side.seed_contact(person)
            stores.connect.seed_contact(person.contact_id, person.stripe_account_id)
    else:
        stores.sources.record_batch(people_batch(*people), now)


def enabled(account_id: str) -> AccountState:
    return AccountState(account_id, True, True, True, True)


def onboarding(account_id: str) -> AccountState:
    return AccountState(account_id, True, False, False, False)


def test_the_latest_reward_choice_of_each_referrer_counts(stores: Any, now: datetime) -> None:
    side = stores.referrer_side
    side.record_reward_choice("R1", RewardChoice.CASH, now)
    side.record_reward_choice("R1", RewardChoice.ACCOUNT_CREDIT, now + timedelta(minutes=1))
    side.record_reward_choice("R2", RewardChoice.ACCOUNT_CREDIT, now)
    side.record_reward_choice("R2", RewardChoice.CASH, now + timedelta(minutes=1))

    assert side.reward_choices(["R1", "R2", "R1", "nobody"]) == {
        "R1": RewardChoice.ACCOUNT_CREDIT,
        "R2": RewardChoice.CASH,
    }
    assert side.reward_choices([]) == {}


def test_a_visitor_of_a_referrers_page_is_kept_once_per_referrer(
    stores: Any, now: datetime
) -> None:
    side = stores.referrer_side

    assert side.record_referrer_visitor("R1", VISITOR_1, now)
    assert not side.record_referrer_visitor("R1", VISITOR_1, now + timedelta(minutes=1))
    assert side.record_referrer_visitor("R2", VISITOR_1, now + timedelta(minutes=2))
    assert side.record_referrer_visitor("R2", VISITOR_2, now)
    assert not side.record_referrer_visitor("R2", VISITOR_2, now + timedelta(minutes=3))


def test_page_link_requests_are_counted_per_address_and_per_visitor_within_the_window(
    stores: Any, now: datetime
) -> None:
    side = stores.referrer_side
    hour_ago = now - timedelta(hours=1)

    assert side.record_page_link_request("req-old", ADDRESS_1, VISITOR_1, ["R1"], hour_ago) == 1
    assert side.record_page_link_request("req-1", ADDRESS_1, VISITOR_1, ["R1", "R2"], now) == 2
    assert side.record_page_link_request("req-2", ADDRESS_2, VISITOR_1, [], now) == 0
    assert side.record_page_link_request("req-3", ADDRESS_1, VISITOR_2, ["R1"], now) == 1

    since = now - timedelta(minutes=10)
    assert side.page_link_requests_since(ADDRESS_1, VISITOR_1, since) == (2, 2)
    assert side.page_link_requests_since(ADDRESS_2, VISITOR_2, since) == (1, 1)
    assert side.page_link_requests_since(ADDRESS_1, VISITOR_1, hour_ago) == (3, 3)
    assert side.page_link_requests_since(ADDRESS_1, VISITOR_1, now + timedelta(seconds=1)) == (0, 0)


def test_contacts_are_found_by_address_whatever_its_case_in_id_order(
    stores: Any, now: datetime
) -> None:
    given_contacts(
        stores,
        now,
        contact("C2", "A1", email="Same@Example.com"),
        contact("C1", "A1", email="same@example.com"),
        contact("C3", "A1", email="other@example.com"),
    )
    side = stores.referrer_side

    assert side.contacts_with_email("  SAME@example.COM ") == ["C1", "C2"]
    assert side.contacts_with_email("same@example.com", limit=1) == ["C1"]
    assert side.contacts_with_email("nobody@example.com") == []


def test_the_connect_key_is_stored_once_before_any_account(stores: Any, now: datetime) -> None:
    connect = stores.connect
    assert connect.of_referrer("R1") is None

    first = connect.reserve("R1", account_key("R1"), now)
    again = connect.reserve("R1", "another-key", now + timedelta(minutes=1))

    assert again == first
    assert (first.idempotency_key, first.account_id, first.status) == (
        account_key("R1"),
        None,
        None,
    )
    assert first.created_at.replace(tzinfo=None) == now.replace(tzinfo=None)
    assert connect.unfinished(10) == []  # no account yet: nothing to read back


def test_the_account_id_is_set_once_and_never_replaced_or_shared(
    stores: Any, now: datetime
) -> None:
    connect = stores.connect
    connect.reserve("R1", account_key("R1"), now)
    connect.reserve("R2", account_key("R2"), now)
    connect.attach("R1", "acct_1", now)
    connect.attach("R1", "acct_1", now)  # the same answer again changes nothing

    with pytest.raises(PermanentIntegrationError):
        connect.attach("R1", "acct_other", now)
    with pytest.raises(PermanentIntegrationError):
        connect.attach("R2", "acct_1", now)
    assert connect.of_referrer("R1").account_id == "acct_1"
    assert connect.of_account("acct_1").referrer_id == "R1"
    assert connect.of_referrer("R2").account_id is None
    assert connect.of_account("acct_other") is None


def test_a_state_is_logged_only_when_it_changes_and_the_latest_is_the_status(
    stores: Any, now: datetime
) -> None:
    connect = stores.connect
    connect.reserve("R1", account_key("R1"), now)
    connect.attach("R1", "acct_1", now)
    later = now + timedelta(minutes=5)

    assert connect.record_state("R1", onboarding("acct_1"), ConnectStatus.ONBOARDING, "return", now)
    assert not connect.record_state(
        "R1", onboarding("acct_1"), ConnectStatus.ONBOARDING, "payout-run", later
    )
    assert connect.of_referrer("R1").status is ConnectStatus.ONBOARDING
    # Not a contact: the state is logged, no destination can be made.
    assert connect.record_state("R1", enabled("acct_1"), ConnectStatus.ENABLED, "webhook", later)
    assert not connect.record_state(
        "R1", enabled("acct_1"), ConnectStatus.ENABLED, "webhook", later
    )
    assert connect.of_account("acct_1").status is ConnectStatus.ENABLED


def test_the_first_enabled_state_makes_the_account_the_contacts_destination_once(
    stores: Any, now: datetime
) -> None:
    given_contacts(
        stores,
        now,
        contact("R1", "A1"),
        contact("R2", "A2", stripe_account_id="acct_from_crm"),
    )
    connect = stores.connect
    assert connect.without_connected_account(["R1", "R2", "nobody"]) == {"R1"}
    connect.reserve("R1", account_key("R1"), now)
    connect.attach("R1", "acct_1", now)

    assert connect.record_state("R1", enabled("acct_1"), ConnectStatus.ENABLED, "return", now)
    assert not connect.record_state("R1", enabled("acct_1"), ConnectStatus.ENABLED, "webhook", now)
    assert connect.without_connected_account(["R1", "R2"]) == set()


def test_unfinished_accounts_are_those_not_enabled_least_recently_read_first(
    stores: Any, now: datetime
) -> None:
    connect = stores.connect
    for i, referrer_id in enumerate(["R1", "R2", "R3", "R4"]):
        connect.reserve(referrer_id, account_key(referrer_id), now + timedelta(minutes=i))
        connect.attach(referrer_id, f"acct_{referrer_id}", now)
    connect.reserve("R5", account_key("R5"), now)  # no account: nothing to read
    connect.record_state(
        "R1", onboarding("acct_R1"), ConnectStatus.ONBOARDING, "return", now + timedelta(hours=1)
    )
    connect.record_state("R2", enabled("acct_R2"), ConnectStatus.ENABLED, "return", now)

    assert connect.unfinished(10) == ["R3", "R4", "R1"]
    assert connect.unfinished(1) == ["R3"]


def referrer_facts_fake(now: datetime) -> InMemoryStores:
    stores = InMemoryStores()
    side = stores.referrer_side
    side.seed_contact(contact("R1", "A1"))
    side.seed_code("R1", "CODE1")
    side.seed_clicks("R1", 3)
    for i in range(2):
        side.seed_step(
            "R1", ConversionStep(f"ref-{i}", Milestone.CUSTOMER, now + timedelta(days=i))
        )
        side.seed_reward(
            "R1",
            RewardLine(
                f"rw-{i}",
                Milestone.CUSTOMER,
                Money(5000, "EUR"),
                RewardStatus.PAID,
                now,
                now + timedelta(days=i),
            ),
        )
    side.seed_reward(
        "R2", RewardLine("rw-9", Milestone.CUSTOMER, Money(1, "EUR"), RewardStatus.PAID, now, now)
    )
    side.seed_payout(
        "R1", PayoutLine("rw-0", Money(5000, "EUR"), PayoutRailKind.STRIPE_TRANSFER, "paid", now)
    )
    return stores


def test_the_fake_shows_the_seeded_facts_of_one_referrer_newest_first(now: datetime) -> None:
    side = referrer_facts_fake(now).referrer_side
    side.record_reward_choice("R1", RewardChoice.CASH, now)

    facts = side.referrer_facts("R1")

    assert facts is not None
    assert (facts.contact.contact_id, facts.code, facts.clicks) == ("R1", "CODE1", 3)
    assert [s.referee_key for s in facts.steps] == ["ref-1", "ref-0"]
    assert [r.reward_id for r in facts.rewards] == ["rw-1", "rw-0"]
    assert [p.reward_id for p in facts.payouts] == ["rw-0"]
    assert facts.choice is RewardChoice.CASH
    assert side.referrer_facts("nobody") is None
    assert side.referrers_with_rewards(2) == ["R1", "R2"]
    assert ("referrer_facts", "R1") in side.calls
