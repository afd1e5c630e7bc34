"""The polling fallback over real HTTP: the official ``stripe`` library lists events from
the fake Stripe (``GET /v1/events``), and the webhook receiver runs under uvicorn.

Events missed while the endpoint was down are found by the next poll, page by page;
the same payment arriving by webhook and by polling, many times and in any order, is
one conversion and one reward.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from domain.errors import PermanentIntegrationError, RetryableIntegrationError
from domain.program import Program
from domain.stripe_conversions import CHECKOUT_COMPLETED, INVOICE_PAID
from integrations.ledger.sql import SqlLedger
from integrations.ledger.stripe_conversions import STRIPE_EVENTS_CURSOR
from integrations.ledger.tables import ConversionPaymentRow, ConversionRow, RewardRow
from integrations.payments.stripe_events import DEFAULT_TYPES, StripeEventFeed
from integrations.payments.stripe_rail import build_stripe_client
from integrations.payments.stripe_stand_in import FakeStripe
from integrations.webhooks import create_app
from tasks.conversions import record_stripe_conversions
from tasks.rewards import compute_new_rewards
from tasks.stripe_events import poll_stripe_events
from tests.integration.test_stripe_conversions_ledger import count, rows
from tests.integration.test_webhooks import STRIPE, STRIPE_SECRET, serve, stripe_signature
from tests.stripe_conversion_events import (
    CODE_A,
    StripeLedger,
    given_referrers,
    invoice,
    refund,
    session,
)


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with FakeStripe() as server:
        yield server


@pytest.fixture
def feed(fake: FakeStripe) -> StripeEventFeed:
    client = build_stripe_client(fake.api_key, fake.url, 0, timeout=5)
    return StripeEventFeed(client, page_size=2)


@pytest.fixture
def stripe_ledger(ledger: SqlLedger) -> StripeLedger:
    joined = StripeLedger(ledger.engine)
    given_referrers(joined, datetime.now(UTC), C1=CODE_A)
    return joined


def poll(feed: StripeEventFeed, ledger: StripeLedger, **kwargs: Any) -> dict[str, int]:
    return poll_stripe_events.fn(feed, ledger, datetime.now(UTC), **kwargs)


def test_the_feed_lists_every_page_of_the_wanted_types_as_webhook_shaped_dicts(
    fake: FakeStripe, feed: StripeEventFeed
) -> None:
    since = int(fake.now().timestamp())
    emitted = [fake.add_event(INVOICE_PAID, invoice(f"in_{i}")) for i in range(5)]
    fake.add_event("customer.updated", {"id": "cus_1", "object": "customer"})

    listed = list(feed.since(since))

    assert listed == list(reversed(emitted))  # newest first, byte-for-byte the event
    assert json.loads(json.dumps(listed)) == listed
    assert fake.count("GET /v1/events") == 3  # pages of 2, 2 and 1


def test_polling_picks_up_the_events_missed_while_the_endpoint_was_down(
    fake: FakeStripe, feed: StripeEventFeed, stripe_ledger: StripeLedger, program: Program
) -> None:
    first = poll(feed, stripe_ledger)
    # The endpoint is down: Stripe records these, nobody receives them.
    missed = [
        fake.add_event(CHECKOUT_COMPLETED, session()),
        fake.add_event(INVOICE_PAID, invoice(legacy=True)),
        fake.add_event("charge.refunded", refund()),
        *(
            fake.add_event(INVOICE_PAID, invoice(f"in_other_{i}", customer=f"cus_other_{i}"))
            for i in range(3)
        ),
    ]

    caught_up = poll(feed, stripe_ledger)
    again = poll(feed, stripe_ledger)
    converted = record_stripe_conversions.fn(stripe_ledger, program, datetime.now(UTC))

    assert first == {"listed": 0, "new": 0, "already_seen": 0, "refused": 0}
    assert (caught_up["listed"], caught_up["new"]) == (5, 5)  # the refund is not a listed type
    assert (again["new"], again["already_seen"]) == (0, again["listed"])
    assert stripe_ledger.sources.cursor(STRIPE_EVENTS_CURSOR) == str(
        max(e["created"] for e in missed)
    )
    assert converted["conversions"] == 1
    # The invoice joins the session's conversion (or finds its ids already there), or,
    # read first without a code of its own, stands for nothing and the session takes
    # its payment ids from it.
    assert converted["joined"] + converted["duplicates"] + converted["not_referred"] == 4
    refs = {r["payment_ref"] for r in rows(stripe_ledger, ConversionPaymentRow)}
    assert refs == {"in_1", "cs_1", "pi_1", "ch_1"}


def test_the_next_poll_starts_at_the_newest_event_seen_minus_the_overlap(
    fake: FakeStripe, feed: StripeEventFeed, stripe_ledger: StripeLedger
) -> None:
    fake.add_event(INVOICE_PAID, invoice("in_older"))
    fake.advance(hours=1)
    fake.add_event(INVOICE_PAID, invoice("in_old"))
    poll(feed, stripe_ledger)
    fake.advance(hours=2)
    fake.add_event(INVOICE_PAID, invoice("in_new"))

    later = poll(feed, stripe_ledger, overlap=timedelta(minutes=10))

    # in_old, at the cursor, is listed again and ignored; in_older is before the overlap.
    assert (later["listed"], later["new"], later["already_seen"]) == (2, 1, 1)


def test_the_first_poll_looks_back_only_as_far_as_asked(
    fake: FakeStripe, feed: StripeEventFeed, stripe_ledger: StripeLedger
) -> None:
    fake.add_event(INVOICE_PAID, invoice("in_old"))
    fake.advance(hours=96)
    fake.add_event(INVOICE_PAID, invoice("in_recent"))

    first = poll_stripe_events.fn(feed, stripe_ledger, fake.now(), first_lookback=timedelta(days=3))

    assert (first["listed"], first["new"]) == (1, 1)


def test_a_failing_list_raises_the_right_integration_error_and_keeps_the_cursor(
    fake: FakeStripe, feed: StripeEventFeed, stripe_ledger: StripeLedger
) -> None:
    fake.add_event(INVOICE_PAID, invoice("in_1"))
    poll(feed, stripe_ledger)
    cursor = stripe_ledger.sources.cursor(STRIPE_EVENTS_CURSOR)
    fake.script("GET /v1/events", [500])
    wrong_key = StripeEventFeed(build_stripe_client("sk_test_wrong", fake.url, 0, timeout=5))

    with pytest.raises(RetryableIntegrationError):
        poll(feed, stripe_ledger)
    with pytest.raises(PermanentIntegrationError) as refused:
        poll(wrong_key, stripe_ledger)

    assert stripe_ledger.sources.cursor(STRIPE_EVENTS_CURSOR) == cursor
    assert "sk_test_wrong" not in str(refused.value)


class _Listed:
    """A feed that lists what it is given."""

    def __init__(self, *events: dict[str, Any]) -> None:
        self.events = list(events)
        self.asked: list[int] = []

    def since(self, created_gte: int) -> list[dict[str, Any]]:
        self.asked.append(created_gte)
        return self.events


def test_an_event_the_inbox_cannot_keep_is_quarantined_and_the_poll_goes_on(
    stripe_ledger: StripeLedger,
) -> None:
    now = datetime.now(UTC)
    created = int(now.timestamp())
    good = {"id": "evt_ok", "type": INVOICE_PAID, "created": created, "livemode": False}
    good["data"] = {"object": invoice()}
    broken = {"id": "evt_broken", "type": INVOICE_PAID, "created": "yesterday", "data": {}}
    feed = _Listed(broken, good)

    counts = poll_stripe_events.fn(feed, stripe_ledger, now)
    poll_stripe_events.fn(feed, stripe_ledger, now)

    assert counts == {"listed": 2, "new": 1, "already_seen": 0, "refused": 1}
    (row,) = [q for q in stripe_ledger.sources.quarantined() if q["stage"] == "stripe-events"]
    assert (row["record"], row["field"]) == ("stripe:evt_broken", "created")
    # The second poll starts at the newest created seen, minus the overlap.
    assert feed.asked[1] == created - 600


def test_the_feed_refuses_more_types_than_stripe_lists_at_once(fake: FakeStripe) -> None:
    client = build_stripe_client(fake.api_key, fake.url, 0)
    with pytest.raises(ValueError, match="event types"):
        StripeEventFeed(client, types=[f"t.{i}" for i in range(21)])
    assert StripeEventFeed(client).types == DEFAULT_TYPES
    assert "invoice_payment.paid" in DEFAULT_TYPES


@pytest.mark.parametrize("seed", [7, 8])
def test_webhook_and_polling_deliveries_in_any_order_five_times_give_one_conversion_and_reward(
    fake: FakeStripe,
    feed: StripeEventFeed,
    stripe_ledger: StripeLedger,
    program: Program,
    seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    paid = fake.add_event(INVOICE_PAID, invoice(legacy=True))
    completed = fake.add_event(CHECKOUT_COMPLETED, session())
    app = create_app(stripe_ledger, sendgrid_public_key=None, stripe_secret=STRIPE_SECRET)
    rng = random.Random(seed)
    actions = ["webhook:paid", "webhook:completed", "poll"] * 5
    rng.shuffle(actions)

    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for action in actions:
            if action == "poll":
                poll(feed, stripe_ledger)
            else:
                evt = paid if action.endswith("paid") else completed
                body = json.dumps(evt).encode()
                stamp = int(datetime.now(UTC).timestamp())
                answer = client.post(
                    STRIPE,
                    content=body,
                    headers={"Stripe-Signature": stripe_signature(body, STRIPE_SECRET, stamp)},
                )
                assert answer.status_code == 200
            if rng.random() < 0.5:
                record_stripe_conversions.fn(stripe_ledger, program, datetime.now(UTC))
                compute_new_rewards.fn(stripe_ledger, program, datetime.now(UTC))
    record_stripe_conversions.fn(stripe_ledger, program, datetime.now(UTC))
    compute_new_rewards.fn(stripe_ledger, program, datetime.now(UTC))

    assert count(stripe_ledger, ConversionRow) == 1
    assert count(stripe_ledger, RewardRow) == 1
    refs = {r["payment_ref"] for r in rows(stripe_ledger, ConversionPaymentRow)}
    assert refs == {"in_1", "cs_1", "pi_1", "ch_1"}
    assert "@" not in caplog.text
